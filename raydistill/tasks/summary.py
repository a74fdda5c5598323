"""What every task's comparison table shares: the stages' display names and the notes that put
the trade-off in words (size, speed, and the headline figure against teacher and baseline)."""

from __future__ import annotations

import math
from typing import Any

STAGE_NAMES = {
    "teacher": "teacher",
    "student": "student (distilled)",
    "baseline": "baseline (student alone)",
}


def role_of(name: str) -> str:
    """The stage a score row belongs to (its name's first word: teacher, student, baseline)."""
    return name.split(" ")[0]


def epochs_cell(epochs: dict[str, int], name: str) -> str:
    """The epochs the row's stage ran, or '-' for a model no stage trained here."""
    count = epochs.get(role_of(name))
    return "-" if count is None else str(count)


def comparison_notes(scores: list[Any], unit: str, digits: int, per: str) -> list[str]:
    """Size, speed and headline points of the distilled student against the teacher, and what
    distillation bought over the baseline. Scores have ``headline`` (a fraction),
    ``parameters`` and ``latency_ms``; ``unit`` names the points ("points", "mAP points")."""
    names = {s.name: s for s in scores}
    teacher, student = names.get(STAGE_NAMES["teacher"]), names.get(STAGE_NAMES["student"])
    alone = names.get(STAGE_NAMES["baseline"])
    notes = []
    if teacher and student:
        notes.append(
            f"student: {teacher.parameters / student.parameters:.1f}x fewer parameters, "
            f"{teacher.latency_ms / student.latency_ms:.1f}x faster per {per}, "
            f"{100 * (student.headline - teacher.headline):+.{digits}f} {unit} vs the teacher"
        )
    if student and alone:
        notes.append(
            f"distillation bought {100 * (student.headline - alone.headline):+.{digits}f} "
            f"{unit} over the same student trained alone"
        )
    return notes


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def ratio(value: float) -> str:
    """``2.5`` -> ``2.50x``; '-' when not finite."""
    return f"{value:.2f}x" if math.isfinite(value) else "-"
