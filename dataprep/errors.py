"""Errors a user can cause. The CLI prints them as one line (no traceback) and sets the exit code.

`UsageError` -> exit 2 (bad flags or arguments); every other `DataprepError` -> exit 1 (bad data).
`ConfigError` (exit 2) and `DataConfigError` (exit 1) name config fields; the CLI shows flags.
Messages say what was found, what was expected, and how to fix it.
"""

from __future__ import annotations

import os


class DataprepError(Exception):
    """A problem caused by the user's input, shown without a traceback."""

    exit_code = 1

    def render(self, name_of) -> str:
        """The message with config fields shown as ``name_of(field)`` (the CLI passes its flag
        names); the plain message for errors that name no field."""
        return str(self)


class UsageError(DataprepError, ValueError):
    """Bad command-line arguments or configuration values."""

    exit_code = 2


class ConfigError(UsageError):
    """A wrong configuration value, named by its config field rather than by a command-line flag.

    `message` may hold ``{field}`` placeholders for the names in `fields`. ``str(error)`` shows the
    field names (``micro_batch_size``); the CLI shows its flags instead (``--micro-batch-size``), so
    library code never needs to know a flag name:

        raise ConfigError(f"{{micro_batch_size}} must be >= 1, got {n}", "micro_batch_size")
    """

    def __init__(self, message: str, *fields: str) -> None:
        self.template = message
        self.fields = fields
        super().__init__(self.render(lambda field: field))

    def render(self, name_of) -> str:
        """The message with each field placeholder replaced by ``name_of(field)``."""
        return self.template.format_map({field: name_of(field) for field in self.fields})

    @staticmethod
    def quote(value: object) -> str:
        """`value` (a path, a user's text) as literal text in a message: its braces doubled."""
        return str(value).replace("{", "{{").replace("}", "}}")

    def __reduce__(self):  # keeps the class and template when the error crosses a process boundary
        return (type(self), (self.template, *self.fields))


class DataConfigError(ConfigError):
    """Bad data (exit 1, not 2) whose message names the configuration fields involved, as
    `ConfigError` does: e.g. a dataset whose token ids do not fit the chosen model."""

    exit_code = 1


def require_extra(module: str, needed_by: str, extra: str) -> None:
    """UsageError naming the install extra when an optional package is not installed, checked
    before any work starts (the package itself is imported where it is used)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{needed_by} needs the {module} package: pip install 'dataprep[{extra}]'")


class ReadError(DataprepError):
    """A bad input record or file, located by file and line (or byte offset).

    A record error of a kind in `HINTS` ends with how to fix it, naming the config field; the CLI
    renders the field as its flag.
    """

    HINTS: dict[str, tuple[str, str]] = {
        "missing_key": ("choose the text keys with {}", "json_keys"),
    }

    def __init__(
        self,
        path: str | os.PathLike,
        reason: str,
        *,
        line: int | None = None,
        offset: int | None = None,
        kind: str = "bad_record",
    ) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        self.line = line
        self.offset = offset
        self.kind = kind  # a short reason key used to count skips, e.g. "not_json", "truncated"
        super().__init__(self.render(lambda field: field))

    def render(self, name_of) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}"
        if self.offset is not None:
            where += f" (byte offset {self.offset})"
        hint = self.HINTS.get(self.kind)
        fix = f"; {hint[0].format(name_of(hint[1]))}" if hint else ""
        return f"{where}: {self.reason}{fix}"

    def __reduce__(self):
        # keep the structured fields when the error crosses a process boundary (worker pools)
        return (
            _rebuild_read_error,
            (self.path, self.reason, self.line, self.offset, self.kind, self.args),
        )


def _rebuild_read_error(path, reason, line, offset, kind, args) -> ReadError:
    error = ReadError(path, reason, line=line, offset=offset, kind=kind)
    error.args = args
    return error


class IndexFormatError(DataprepError, ValueError):
    """A `.bin/.idx` pair that is not a valid MMIDIDX dataset."""
