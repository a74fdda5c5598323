"""Errors of the job schema, and pydantic's validation errors as one line per problem."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError


class JobError(ValueError):
    """A job file that cannot be run: the message names the key path or file and says why."""


class KeyedError(ValueError):
    """A cross-field error that knows its key path (``distill.alpha``), reported under it
    rather than under the section whose validator raised it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def known_keys(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """Field names of the section at ``path`` below ``model`` (for 'did you mean' hints)."""
    current: Any = model
    for part in path:
        if isinstance(part, int) or not (
            isinstance(current, type) and issubclass(current, BaseModel)
        ):
            continue
        field = current.model_fields.get(part)
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def validation_lines(exc: ValidationError, source: str, root: type[BaseModel]) -> str:
    """One line per problem: ``<source>: <key.path>: <why>``; an unknown key gets the closest
    field name of its section in ``root`` as a hint."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, KeyedError):
            key, why = ctx_error.key, str(ctx_error).split(": ", 1)[1]
        elif err["type"] == "extra_forbidden":
            why = "unknown key"
            hint = difflib.get_close_matches(str(loc[-1]), known_keys(root, loc[:-1]), n=1)
            if hint:
                why += f" (did you mean '{hint[0]}'?)"
        elif err["type"] == "missing":
            why = "required key is missing"
        else:
            why = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict | list):
                why += f" (got {err['input']!r})"
        lines.append(f"{source}: {key}: {why}")
    return "\n".join(lines)
