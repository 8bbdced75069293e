"""One exception family, each class marked terminal (don't retry) or transient (retry).

Airflow task retries and the CLI's exit codes both read `transient`: a bad mapping or bad
credentials fail the same way every time, a reset connection may not.
"""

from __future__ import annotations


class EtlError(Exception):
    """Base of every error the pipeline raises on purpose. The message says what to do."""

    transient: bool = False
    exit_code: int = 1
    #: The failure is in `ingest_run` already (a dataset's load records its own): callers
    #: that record failures need not record it again.
    run_recorded: bool = False


class MappingError(EtlError):
    """A mapping file is invalid. Carries every problem found, one per line."""

    exit_code = 2

    MAX_LINE = 500  # a problem names a file, a key and what to do: never a whole huge value

    def __init__(self, problems: list[str]):
        self.problems = [p if len(p) <= self.MAX_LINE else p[:self.MAX_LINE - 1] + "…"
                         for p in problems]
        super().__init__("\n".join(self.problems))


class ConfigError(EtlError):
    """A bad invocation: unknown option value, missing environment variable, bad target URL."""

    exit_code = 2


class SourceError(EtlError):
    """The source database could not be read."""

    transient = True


class SourceSchemaError(SourceError):
    """The source lacks a table or column the mapping names: retrying will not help."""

    transient = False
    exit_code = 2


class SourceDataError(SourceError):
    """The source itself failed on a value mid-read (a cast in a `query:` meeting bad data):
    retrying reads the same value again."""

    transient = False


class TargetError(EtlError):
    """The target database refused the load; the dataset's transaction was rolled back."""

    transient = True


class LoadFailed(EtlError):
    """A dataset's load failed on something none of these errors names (a library's error, a
    bug): rolled back and recorded; the cause is chained and was logged with its traceback.
    Transient when the cause is the machine's (a file, a timeout)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class TargetSchemaError(TargetError):
    """The target's schema is behind the code and this account may not upgrade it (the loader
    role): the owner runs `etl init-target`; retrying will not help."""

    transient = False


class MediaError(EtlError):
    """One attachment (an M field's file) is missing, unreadable, of a type that is not
    evidence, or too large: its row is rejected with this reason, the dataset goes on.
    `rule` is one of `etl.media.files.MEDIA_RULES`."""

    def __init__(self, rule: str, message: str):
        self.rule = rule
        super().__init__(message)


class FileServerUnreachable(EtlError):
    """A unit's file server or share cannot be reached at all (refused, DNS, timeout, not
    mounted, 5xx): every file of the dataset would fail alike, so the dataset fails and is
    retried, instead of rejecting each row for a fault that is not the data's."""

    transient = True


class MediaStoreError(EtlError):
    """The collecting organisation's own file store refused a write (full disk, permissions,
    object store down): nothing about the unit's file is known to be wrong."""

    transient = True


class MassDeleteRefused(EtlError):
    """A load would mark a large share of a unit's active records deleted because the source
    no longer returns them (an emptied table, a broken view, a wrong schema look exactly like
    that). Nothing was marked; a person confirms (`--allow-mass-delete`, the Airflow param
    `allow_mass_delete`) once the source really lost them. Retrying reads the same source."""
