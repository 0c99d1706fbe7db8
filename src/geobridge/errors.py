"""Exceptions that carry a message meant for the user (shown without a traceback by the CLI)."""

from __future__ import annotations


class GeoBridgeError(Exception):
    """Base class of errors a user can cause and fix: bad paths, bad data, bad options."""


class DataError(GeoBridgeError):
    """A dataset is missing files, has the wrong layout or holds unreadable content."""


class CheckpointError(GeoBridgeError):
    """A checkpoint is missing, incomplete, of an unknown format or not safe to load."""


class IndexFormatError(GeoBridgeError):
    """An index file is missing, corrupt or of an unsupported format version."""


class ConfigError(GeoBridgeError, ValueError):
    """A configuration value has the wrong type, lies out of range or names something unknown.

    The message starts with the dotted key, e.g. ``optim.lr: expected a number > 0, got -1.0``. It is also a
    ValueError, as the model-config errors were before there was one validator.
    """


class ExportError(GeoBridgeError):
    """An export failed, or its graphs do not reproduce the torch model (the self-check)."""
