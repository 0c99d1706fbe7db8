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


class ExportError(GeoBridgeError):
    """An export failed, or its graphs do not reproduce the torch model (the self-check)."""
