"""The package version, in a leaf module: readers of it (the world's manifest, the service, the CLI) import
nothing else. Kept equal to ``pyproject.toml``'s ``version`` by a test."""

__version__ = "0.1.0"
