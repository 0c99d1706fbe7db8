"""``python -m geobridge``: the ``geobridge`` command (``geobridge.cli.main``)."""

from __future__ import annotations

import sys

from geobridge.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
