"""The base of every job section, and the field checks several sections share."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A job section: unknown keys are errors, and assignments are validated like the file."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def existing_file(value: Path | None) -> Path | None:
    """``value`` with ``~`` expanded; ValueError when it names no existing file."""
    if value is not None and not Path(value).expanduser().exists():
        raise ValueError(f"file not found: {value}")
    return Path(value).expanduser() if value is not None else None
