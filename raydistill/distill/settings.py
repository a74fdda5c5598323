"""A Distiller's settings: its keyword arguments checked by the job schema's ``distill`` section
(:class:`~raydistill.config.DistillConfig`), so that every range and choice is defined once.

The schema imports this package (for schedules and the names of the terms), so it is imported
here when a Distiller is built, not when this module loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from raydistill.distill.model_io import adapter_key

if TYPE_CHECKING:
    from raydistill.config.distill import DistillConfig

KEYWORDS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature",),
    "alpha": ("alpha",),
    "feature_weight": ("feature_weight",),
    "feature_grad_scale": ("feature_grad_scale",),
    "weighting": ("weighting",),
    "method": ("method",),
    "dkd_alpha": ("dkd", "alpha"),
    "dkd_beta": ("dkd", "beta"),
    "dkd_warmup": ("dkd", "warmup"),
    "dkd_ce_weight": ("dkd", "ce_weight"),
    "feature_loss": ("feature_loss",),
    "attention_p": ("attention_p",),
    "attention_variant": ("attention_variant",),
}
"""Distiller keyword -> its field path in the ``distill`` section."""


def settings_from_keywords(total_epochs: int | None, **keywords: Any) -> DistillConfig:
    """The ``distill`` section holding ``keywords`` (Distiller names, see :data:`KEYWORDS`),
    validated, with the schedules checked over ``total_epochs`` (None: epoch 0 only).

    Raises ValueError naming the offending field (``Distiller: dkd.beta: ...``).
    """
    from pydantic import ValidationError

    from raydistill.config.distill import DistillConfig, check_schedule_ranges
    from raydistill.config.errors import validation_lines

    raw: dict[str, Any] = {}
    for name, value in keywords.items():
        *parents, leaf = KEYWORDS[name]
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        settings = DistillConfig.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(validation_lines(exc, "Distiller", DistillConfig)) from None
    if total_epochs is not None and total_epochs < 1:
        raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
    check_schedule_ranges(settings, total_epochs)
    return settings


def keywords_from_settings(settings: DistillConfig) -> dict[str, Any]:
    """The Distiller keywords of a ``distill`` section (the inverse of
    :func:`settings_from_keywords`)."""
    out: dict[str, Any] = {}
    for name, path in KEYWORDS.items():
        value: Any = settings
        for part in path:
            value = getattr(value, part)
        out[name] = value
    return out


def feature_pairs(
    layers: Sequence[str] | Mapping[str, str] | Sequence[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    """``feature_layers`` as (student layer, teacher layer) pairs: from names (the same on both
    sides), a mapping student -> teacher, pairs, or objects with ``.student``/``.teacher``.
    ValueError when a layer appears in two pairs."""
    pairs = _parse_pairs(layers)
    for side, names in (("student", [s for s, _ in pairs]), ("teacher", [t for _, t in pairs])):
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{side} layers {dupes} appear in more than one feature pair")
    keys = [adapter_key(s) for s, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"student layers {keys} collide once '.' is replaced by '__'")
    return pairs


def _parse_pairs(
    layers: Sequence[str] | Mapping[str, str] | Sequence[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    if layers is None:
        return []
    if isinstance(layers, str):
        raise TypeError("feature_layers must be a sequence of names or pairs, not a single string")
    if isinstance(layers, Mapping):
        return [(str(s), str(t)) for s, t in layers.items()]
    pairs: list[tuple[str, str]] = []
    for item in layers:
        if isinstance(item, str):
            pairs.append((item, item))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            pairs.append((str(item[0]), str(item[1])))
        elif hasattr(item, "student") and hasattr(item, "teacher"):
            # A config object such as the job file's {student: ..., teacher: ...} pair.
            pairs.append((str(item.student), str(item.teacher)))
        else:
            raise TypeError(
                f"feature layer {item!r} is neither a name nor a (student, teacher) pair"
            )
    return pairs
