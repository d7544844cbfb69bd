"""The one error type for bad user input, shared by every package of the toolkit.

A :class:`UserInputError` is raised wherever a file, a field or a value given by the user is wrong.
The command-line entry points print it as one line and exit with code 2 (see
:mod:`toolkit_core.cli_support`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

_MISSING = object()


class UserInputError(ValueError):
    """Bad input from the user: a file, a field in it, or a value.

    Args:
        message: what is wrong and what was expected.
        file: the file (or directory) the problem is in, if any.
        field: the field, column, key or option that is wrong, if any.
        value: the offending value, if useful to show.

    The string form is ``"<file>: <field>: <message> (got <value>)"`` with absent parts left out,
    so it always fits on one line.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike[str] | None = None,
        field: str | None = None,
        value: Any = _MISSING,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.field = field
        self.value = value
        super().__init__(self._format())

    def _format(self) -> str:
        parts = [p for p in (self.file, self.field) if p]
        text = self.message
        if self.value is not _MISSING:
            shown = repr(self.value)
            if len(shown) > 120:
                shown = shown[:117] + "..."
            text = f"{text} (got {shown})"
        line = ": ".join([*parts, text])
        return " ".join(line.split())


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a mapping"}


def expect_type(value: Any, kind: type | tuple[type, ...], field: str, file: str | PathLike[str] | None) -> Any:
    """``value`` when it is a ``kind`` (a YAML ``true`` is no ``int``), else one line naming ``file`` and ``field``."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(_TYPE_WORDS.get(k, k.__name__) for k in kinds)
        raise UserInputError(f"expected {names}", file=file, field=field, value=value)
    return value


def require(condition: bool, message: str, **where: Any) -> None:
    """Raise :class:`UserInputError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserInputError(message, **where)


def dataclass_from(cls: type, values: dict[str, Any], *, file: str | PathLike[str] | None, key: str) -> Any:
    """``cls(**values)`` for a config section read from ``file`` at ``key``, every failure one line naming both.

    An unknown key is named as ``key.name``; a :class:`UserInputError` of the dataclass's own checks keeps its
    message with its field under ``key``; a value of the wrong type (a ``TypeError``) names ``key``.
    """
    from dataclasses import fields

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserInputError("unknown key(s) " + ", ".join(unknown) + "; known: " + ", ".join(sorted(known)),
                             file=file, field=f"{key}.{unknown[0]}")
    try:
        return cls(**values)
    except UserInputError as err:
        raise UserInputError(err.message, file=file, field=f"{key}.{err.field}" if err.field else key,
                             value=err.value) from None
    except TypeError as err:
        raise UserInputError(f"invalid value: {err}", file=file, field=key) from None
