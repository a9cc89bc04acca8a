"""How a setting is declared: once, on its field, inside ``Annotated[...]``.

Bounds are ``annotated_types`` constraints (``Ge``, ``Le``, ``MinLen``...). The markers here add the
rest: the environment variable that sets it (``Env``) and any further check or text form
(``Check``). They are plain data: ``server/config.py`` derives from them the validation of a TOML
file and of the environment (pydantic reads the same metadata) and the table of environment
variables, so a new setting is one field, and nothing in protocol/ validates or imports a validator.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Env:
    """The setting is also read from this environment variable: by default ``CLARION_`` and the
    field's name in capitals. For an app setting, the variable applies to every app."""

    name: str | None = None

    def variable(self, field: str) -> str:
        return self.name or f"CLARION_{field.upper()}"


@dataclass(frozen=True, slots=True)
class Check:
    """A check beyond the type and bounds. ``before=False``: it gets the typed value, returns it
    (or a normal form of it) and raises ValueError with a message saying what is wrong.
    ``before=True``: it reads the raw value first, to turn a text form (an environment variable's
    string) into the structured one."""

    function: Callable[[Any], Any]
    before: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        # pydantic's hook for metadata it does not know: wrap the field's own schema in a plain
        # validator function. A core schema is a plain dict, so nothing is imported for this.
        kind = "function-before" if self.before else "function-after"
        return {"type": kind, "function": {"type": "no-info", "function": self.function}, "schema": handler(source)}


def matches(pattern: str) -> Check:
    """The whole string matches ``pattern`` (None, for an optional setting left unset, passes)."""
    compiled = re.compile(pattern)

    def check(value: str | None) -> str | None:
        if value is not None and compiled.fullmatch(value) is None:
            raise ValueError(f"should match {pattern}")
        return value

    return Check(check)
