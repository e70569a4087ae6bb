"""Errors a user can act on. The CLI prints their message on one line and exits non-zero."""


class SentituneError(Exception):
    """Base class: the message names the problem and where (file, line, member, field)."""


class DataError(SentituneError):
    """Input data is missing, unreadable or malformed."""


class ModelError(SentituneError):
    """A model spec cannot be resolved or does not fit the requested method."""


class RunError(SentituneError):
    """A run directory is missing, from another config, or would be overwritten."""
