"""The job reference (docs/job-reference.md), generated from the job schema.

Every section and key of a job file comes from :class:`raydistill.config.JobConfig` by pydantic
introspection alone (``model_fields``: each field's type, default, constraints and description,
each section's docstring), so the reference cannot drift from what ``raydistill validate``
accepts. ``tests/test_docs.py`` fails when the file in docs/ and this output differ.

    python -m raydistill.reference            # print the reference
    python -m raydistill.reference --write    # rewrite docs/job-reference.md
    python -m raydistill.reference --check    # exit 1 when docs/job-reference.md is stale
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "docs" / "job-reference.md"

_HEADER = """\
# Job reference

Generated from the job schema (`raydistill.config.JobConfig`) by
`python -m raydistill.reference --write`; do not edit it by hand. `tests/test_docs.py` fails
when this file and the schema differ.

Every key a job file may hold, section by section. A key's path (`distill.alpha`) is what
`--set distill.alpha=0.7` takes and what error messages name; an unknown key is an error.
`raydistill validate JOB` prints a job with every default filled in. "keys below" means the
value is a mapping whose keys are listed in the section of that path.
"""


@dataclass(frozen=True)
class _Section:
    """One mapping of the job: its key path, the model that checks it, and how it is chosen."""

    path: str
    model: type[BaseModel]
    variant: str = ""  # for one member of a union picked by a discriminator: "op: hflip"


def job_reference() -> str:
    """The Markdown job reference for :class:`raydistill.config.JobConfig`."""
    from raydistill.config import JobConfig

    return render_reference(JobConfig, _HEADER)


def render_reference(root: type[BaseModel], header: str = "") -> str:
    """Markdown for ``root`` and every pydantic section nested in it (depth first, in field
    order). A model met again at another path is listed once, and later paths point to it."""
    out = [header.rstrip("\n")] if header else []
    seen: dict[type[BaseModel], str] = {}
    for section in _sections(root, ""):
        out.append(_render_section(section, seen))
    return "\n\n".join(out).rstrip("\n") + "\n"


def _sections(model: type[BaseModel], path: str, variant: str = "") -> Iterator[_Section]:
    yield _Section(path, model, variant)
    for name, field in model.model_fields.items():
        child = f"{path}.{name}" if path else name
        for inner, item, label in _nested(field):
            yield from _sections(inner, f"{child}[]" if item else child, label)


def _nested(field: FieldInfo) -> list[tuple[type[BaseModel], bool, str]]:
    """The models a field's value may be: (model, inside a list or dict, variant label)."""
    found: list[tuple[type[BaseModel], bool, str]] = []

    def walk(tp: Any, in_container: bool, discriminator: str | None) -> None:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            base, *meta = typing.get_args(tp)
            for m in meta:
                if isinstance(m, FieldInfo) and isinstance(m.discriminator, str):
                    discriminator = m.discriminator
            walk(base, in_container, discriminator)
        elif origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(tp):
                walk(arg, in_container, discriminator)
        elif origin in (list, tuple, set, frozenset, dict):
            for arg in typing.get_args(tp):
                walk(arg, True, discriminator)
        elif _is_model(tp):
            label = _variant_label(tp, discriminator)
            if tp not in [f[0] for f in found]:
                found.append((tp, in_container, label))

    discriminator = field.discriminator if isinstance(field.discriminator, str) else None
    walk(field.annotation, False, discriminator)
    return found


def _variant_label(model: type[BaseModel], discriminator: str | None) -> str:
    if discriminator is None or discriminator not in model.model_fields:
        return ""
    return f"{discriminator}: {model.model_fields[discriminator].default}"


def _render_section(section: _Section, seen: dict[type[BaseModel], str]) -> str:
    depth = section.path.count(".") + 1 if section.path else 0
    title = f"`{section.path}`" if section.path else "Top level"
    if section.variant:
        title += f" with `{section.variant}`"
    lines = ["#" * min(depth + 2, 5) + " " + title]
    where = f"`{section.path}`" + (f" with `{section.variant}`" if section.variant else "")
    if section.model in seen:
        lines.append(f"The same keys as {seen[section.model]}.")
        return "\n\n".join(lines)
    seen[section.model] = where if section.path else "the top level"
    for base in _documented_bases(section.model):
        if base is not section.model and not base.model_fields:
            continue  # a shared base with no keys of its own (the schema's Section)
        if base is not section.model and base in seen:
            keys = [f"`{k}`" for k in base.model_fields]
            listed = ", ".join(keys[:-1]) + " and " + keys[-1] if len(keys) > 1 else keys[0]
            lines.append(f"{listed} work as in {seen[base]}.")
            continue
        seen.setdefault(base, where)
        lines.append(_docstring(base))
    rows = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for name, field in section.model.model_fields.items():
        cells = [f"`{name}`", _type(field), _default(field), _constraints(field)]
        cells.append(field.description or "")
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("\n".join(rows))
    return "\n\n".join(lines)


def _documented_bases(model: type[BaseModel]) -> list[type[BaseModel]]:
    """The model and the pydantic models it extends, each with a docstring of its own (a
    section that extends another, as the teacher extends the model spec, shows both)."""
    return [
        klass
        for klass in model.__mro__
        if _is_model(klass) and klass is not BaseModel and klass.__dict__.get("__doc__")
    ]


def _docstring(model: type[BaseModel]) -> str:
    """The model's own docstring (not an inherited one) as Markdown."""
    text = inspect.cleandoc(model.__dict__["__doc__"])
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"``\1``", text)  # :class:`X` -> ``X``
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return _literal_blocks(text)


def _literal_blocks(text: str) -> str:
    """reST literal blocks (a paragraph ending in ``::`` and an indented block) as fences."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(line)
            i += 1
            continue
        out.append(line.rstrip()[:-1])
        i += 1
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        body = inspect.cleandoc("\n".join(block))
        out += ["", "```yaml", body, "```"]
        if i < len(lines):
            out.append("")
    return "\n".join(out).strip()


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _type(field: FieldInfo) -> str:
    return _type_name(field.annotation)


def _type_name(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(_yaml(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        if all(_is_model(a) for a in args):
            return "mapping (keys below)"
        names = [_type_name(a) for a in args if a is not type(None)]
        if type(None) in args:
            names.append("null")
        return " | ".join(dict.fromkeys(names))
    if origin in (list, set, frozenset):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if origin is dict:
        return f"mapping {_type_name(args[0])} -> {_type_name(args[1])}" if args else "mapping"
    if _is_model(tp):
        return "mapping (keys below)"
    if isinstance(tp, type) and issubclass(tp, Enum):
        return " | ".join(_yaml(m.value) for m in tp)
    if isinstance(tp, type) and issubclass(tp, Path):
        return "path"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if _is_model(type(value)):
        try:
            if value == type(value)():
                return "(keys below)"
        except (TypeError, ValueError):  # a model with required keys has no bare default
            pass
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    """A default as it would be written in a job file (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return _yaml(value.value)
    if isinstance(value, BaseModel):
        return _yaml(value.model_dump(mode="json", exclude_none=True))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    if isinstance(value, str) and value == "":
        return '""'
    return str(value)


_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _constraints(field: FieldInfo) -> str:
    parts: list[str] = []
    for meta in field.metadata:
        for attr, sign in _BOUNDS:
            bound = getattr(meta, attr, None)
            if bound is not None:
                parts.append(f"{sign} {bound}")
        if getattr(meta, "min_length", None) is not None:
            parts.append(f"at least {meta.min_length} item(s)")
        if getattr(meta, "max_length", None) is not None:
            parts.append(f"at most {meta.max_length} item(s)")
        if getattr(meta, "pattern", None) is not None:
            parts.append(f"matches `{meta.pattern}`")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("\n", " ").replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help=f"rewrite {REFERENCE_FILE.name}")
    action.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    parser.add_argument("--file", type=Path, default=REFERENCE_FILE, help="the reference file")
    args = parser.parse_args(argv)
    text = job_reference()
    if args.write:
        args.file.parent.mkdir(parents=True, exist_ok=True)
        args.file.write_text(text, encoding="utf-8")
        print(f"wrote {args.file}")
        return 0
    if args.check:
        current = args.file.read_text(encoding="utf-8") if args.file.is_file() else ""
        if current != text:
            print(f"{args.file} is stale: run python -m raydistill.reference --write")
            return 1
        print(f"{args.file} matches the schema")
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
