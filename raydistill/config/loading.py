"""Reading a job: YAML in, ``key.path=value`` overrides applied, validated, one line per error."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from raydistill.config.errors import JobError, validation_lines
from raydistill.config.job import JobConfig


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=3`` -> (["train", "epochs"], 3); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise JobError(f"override '{text}' is not of the form key.path=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        why = yaml_error_line(exc)
        raise JobError(f"override '{text}': value is not valid YAML ({why})") from None
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Set ``a.b.c=value`` overrides in a raw job mapping (before validation)."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: i + 1])
                raise JobError(f"override '{text}': {where} is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``<source>: <key.path>: <why>``."""
    return validation_lines(exc, source, JobConfig)


def job_from_dict(raw: Mapping[str, Any], source: str = "job") -> JobConfig:
    """Validate a raw mapping into a :class:`JobConfig`, raising :class:`JobError` on bad input."""
    try:
        return JobConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise JobError(format_validation_error(exc, source)) from None


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """A YAML parser error in one line (``line 3, column 1: expected ...``): PyYAML's own text
    spans several lines with a caret drawing, which breaks one-line-per-problem output."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
    context = getattr(exc, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}" + (f" ({context})" if context else "")


def load_job(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> JobConfig:
    """Read a job YAML, apply ``key.path=value`` overrides, validate.

    The job's ``name`` defaults to the file's stem.
    """
    path = Path(path)
    if not path.is_file():
        raise JobError(f"{path}: job file not found")
    try:
        # safe_load builds plain data only: a `!!python/object` tag is an error, never code.
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise JobError(f"{path}: not valid YAML: {yaml_error_line(exc)}") from None
    if not isinstance(raw, dict):
        raise JobError(f"{path}: a job is a mapping of sections, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    return job_from_dict(apply_overrides(raw, overrides), str(path))
