"""Error types that say whether retrying can help.

Dagster's retry policy and the CLI both look at these: a :class:`TransientError` is retried, a
:class:`TerminalError` is reported once with its message and never retried.
"""


class LakeError(Exception):
    """Base class of every error the engine raises on purpose."""


class TerminalError(LakeError):
    """Retrying will not help: fix the configuration, the input or the schema first."""


class TransientError(LakeError):
    """A passing condition (throttling, a dropped connection, a lock held by another run)."""


class ConfigError(TerminalError):
    """Settings that cannot work."""


class SchemaError(TerminalError):
    """A schema file that is invalid, or a change to a table that is not compatible."""


class AuditError(TerminalError):
    """A new partition version failed its audit; the previous version stays published."""


class NotFoundError(TerminalError):
    """A lake, table, partition or object that does not exist."""


class UnsupportedError(TerminalError):
    """The backend cannot do this (e.g. object tags on the local folder)."""
