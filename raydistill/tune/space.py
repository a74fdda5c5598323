"""The search space of ``raydistill tune``: job key paths mapped to distributions.

A job's ``tune.space`` maps a key path of the job (``distill.temperature.start``; paths inside
``distill`` may drop the prefix: ``temperature.start``) to a distribution, written either as a
call or as a one-key mapping::

    distill.temperature.start: uniform(1, 10)
    train.lr: loguniform(0.001, 0.03)
    distill.alpha: {choice: [0.5, {kind: linear, start: 0.9, end: 0.1}]}
    train.batch_size: grid([16, 32])

Kinds: ``uniform(low, high)``, ``loguniform(low, high)``, ``quniform(low, high, q)``,
``randint(low, high)`` (high exclusive), ``choice([...])`` and ``grid([...])`` (every value is
tried, times ``num_samples``). Arguments are YAML, so choices may be whole schedules (in a YAML
file, write a choice holding mappings in the mapping form, or quote the call).

Parsing and checking need no Ray; :meth:`Dimension.to_tune` builds Ray Tune's domain.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

Kind = Literal["uniform", "loguniform", "quniform", "randint", "choice", "grid"]
_NUMERIC_ARGS: dict[str, int] = {"uniform": 2, "loguniform": 2, "quniform": 3, "randint": 2}
_LIST_KINDS = ("choice", "grid")
KINDS: tuple[str, ...] = (*_NUMERIC_ARGS, *_LIST_KINDS)
_CALL = re.compile(r"^\s*([A-Za-z_]+)\s*\((.*)\)\s*$", re.DOTALL)

# Fields a trial cannot change: the shared teacher pass was made with them (they are part of
# the teacher cache's key), or they say where the run's files go.
FROZEN_PREFIXES = (
    "name",
    "data",
    "teacher",
    "cache",
    "output",
    "scaling",
    "tune",
    "distill.feature_layers",
    "distill.features_from",
    "distill.feature_dtype",
    "distill.teacher_pass",
    "distill.enabled",
)


class SpaceError(ValueError):
    """A search-space entry that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Dimension:
    """One searched job field: ``path`` into the job, a distribution ``kind`` and its ``args``
    (``[low, high]``, ``[low, high, q]`` or the list of values)."""

    path: tuple[str, ...]
    kind: Kind
    args: tuple[Any, ...]

    @property
    def key(self) -> str:
        return ".".join(self.path)

    def __str__(self) -> str:
        if self.kind in _LIST_KINDS:
            return f"{self.kind}({list(self.args)})"
        return f"{self.kind}({', '.join(f'{a:g}' for a in self.args)})"

    def corners(self) -> list[Any]:
        """The values that bound what this dimension can produce (checked against the job)."""
        if self.kind in _LIST_KINDS:
            return list(self.args)
        low, high = self.args[0], self.args[1]
        return [low, high - 1] if self.kind == "randint" else [low, high]

    def clamp(self, value: Any) -> Any:
        """``value`` brought back inside what this dimension draws: PBT perturbs numbers by
        factors (0.8x, 1.2x), which can leave the range (an alpha above 1)."""
        if self.kind in _LIST_KINDS:
            return value
        low, high = self.args[0], self.args[1]
        if self.kind == "randint":
            return int(min(max(round(value), low), high - 1))
        if self.kind == "quniform":
            q = self.args[2]
            value = round(float(value) / q) * q
        return min(max(float(value), low), high)

    def to_tune(self) -> Any:
        """The Ray Tune domain (``tune.uniform(...)``, ``tune.grid_search([...])``, ...)."""
        from ray import tune

        if self.kind == "grid":
            return tune.grid_search(list(self.args))
        if self.kind == "choice":
            return tune.choice(list(self.args))
        return getattr(tune, self.kind)(*self.args)


def _number(value: Any, what: str) -> float:
    # PyYAML reads `1e-3` (no dot) as a string; a search space means the number.
    if isinstance(value, bool):
        raise SpaceError(f"{what}: expected a number, got {value}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpaceError(f"{what}: expected a number, got {value!r}") from None


def parse_dimension(key: str, spec: Any) -> Dimension:
    """One ``tune.space`` entry: ``key`` as written, ``spec`` a call string or one-key mapping."""
    where = f"tune.space.{key}"
    if isinstance(spec, str):
        match = _CALL.match(spec)
        if not match:
            raise SpaceError(
                f"{where}: {spec!r} is not a distribution; write e.g. uniform(1, 10) or "
                f"choice([0.5, 0.9]) (kinds: {', '.join(KINDS)})"
            )
        kind, inner = match.group(1), match.group(2)
        if kind not in KINDS:  # before reading the arguments: the name alone decides
            raise SpaceError(f"{where}: unknown distribution {kind!r} (one of {', '.join(KINDS)})")
        try:
            # the arguments are data (safe YAML), never evaluated as Python
            args = yaml.safe_load(f"[{inner}]")
        except yaml.YAMLError as exc:
            why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise SpaceError(f"{where}: cannot read the arguments of {spec!r}: {why}") from None
    elif isinstance(spec, Mapping) and len(spec) == 1:
        kind, args = next(iter(spec.items()))
        if kind not in _LIST_KINDS and not isinstance(args, list):
            args = [args]
        elif kind in _LIST_KINDS:
            args = [args]
    else:
        raise SpaceError(
            f"{where}: give a distribution such as uniform(1, 10), or a mapping with one key "
            f"such as {{choice: [0.5, 0.9]}}; got {spec!r}"
        )
    if kind not in KINDS:
        raise SpaceError(f"{where}: unknown distribution {kind!r} (one of {', '.join(KINDS)})")
    if kind in _LIST_KINDS:
        if len(args) != 1 or not isinstance(args[0], list) or not args[0]:
            raise SpaceError(f"{where}: {kind} takes one non-empty list, e.g. {kind}([0.5, 0.9])")
        values = tuple(args[0])
        return Dimension(tuple(key.split(".")), kind, values)  # type: ignore[arg-type]
    want = _NUMERIC_ARGS[kind]
    if len(args) != want:
        names = "low, high, q" if want == 3 else "low, high"
        raise SpaceError(f"{where}: {kind} takes {want} numbers ({names}), got {len(args)}")
    numbers = tuple(_number(a, where) for a in args)
    low, high = numbers[0], numbers[1]
    if not low < high:
        raise SpaceError(f"{where}: {kind} needs low < high, got {low:g} and {high:g}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{where}: loguniform needs low > 0, got {low:g}")
    if kind == "randint":
        if low != int(low) or high != int(high):
            raise SpaceError(f"{where}: randint takes integers, got {low:g} and {high:g}")
        numbers = (int(low), int(high))
    return Dimension(tuple(key.split(".")), kind, numbers)  # type: ignore[arg-type]


def qualify(
    path: tuple[str, ...], top_level: set[str], distill_fields: set[str]
) -> tuple[str, ...]:
    """``temperature.start`` means ``distill.temperature.start``."""
    if path[0] not in top_level and path[0] in distill_fields:
        return ("distill", *path)
    return path


def set_path(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``raw`` with ``value`` at ``path``; intermediate mappings must exist."""
    out = copy.deepcopy(raw)
    node: Any = out
    for i, part in enumerate(path[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            here = ".".join(path[: i + 1])
            raise SpaceError(f"tune.space.{'.'.join(path)}: {here} is not a section of the job")
        node = child
    if not isinstance(node, dict) or path[-1] not in node:
        raise SpaceError(f"tune.space.{'.'.join(path)}: the job has no field {'.'.join(path)}")
    node[path[-1]] = copy.deepcopy(value)
    return out


def apply_params(raw: dict[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved job dict with each ``key.path: value`` of a trial's parameters set."""
    for key, value in params.items():
        raw = set_path(raw, tuple(key.split(".")), value)
    return raw


def frozen_reason(path: tuple[str, ...]) -> str | None:
    key = ".".join(path)
    for prefix in FROZEN_PREFIXES:
        if key == prefix or key.startswith(prefix + "."):
            return (
                f"{prefix} is fixed for a search: every trial shares one teacher pass and one "
                "run directory"
            )
    return None
