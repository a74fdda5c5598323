"""Schedules for temperature and alpha, at given epochs."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from raydistill.distill import Schedule, ScheduleLike, as_schedule


def test_constant() -> None:
    s = Schedule(start=4.0)
    assert s.kind == "constant"
    assert [s.value(e) for e in (0, 7, 1000)] == [4.0, 4.0, 4.0]
    assert s.values(3) == [4.0, 4.0, 4.0]


def test_step_decay_with_floor() -> None:
    s = Schedule(kind="step", start=5.0, step=-0.5, every=10, floor=1.0)
    assert [s.value(e) for e in (0, 9, 10, 25, 100)] == [5.0, 5.0, 4.5, 4.0, 1.0]
    assert s.value(79) == 1.5
    assert s.value(80) == 1.0


def test_step_growth_capped() -> None:
    s = Schedule(kind="step", start=0.1, step=0.2, every=2, floor=0.5)
    assert [round(s.value(e), 10) for e in (0, 1, 2, 3, 4, 6, 50)] == [
        0.1,
        0.1,
        0.3,
        0.3,
        0.5,
        0.5,
        0.5,
    ]


def test_step_without_floor_keeps_going() -> None:
    s = Schedule(kind="step", start=1.0, step=-0.25)
    assert s.values(6) == [1.0, 0.75, 0.5, 0.25, 0.0, -0.25]


def test_linear_alpha_over_ten_epochs() -> None:
    s = Schedule(kind="linear", start=0.9, end=0.5, epochs=10)
    assert s.value(0) == pytest.approx(0.9)
    assert s.value(3) == pytest.approx(0.9 - 0.4 * 3 / 9)  # 0.76667
    assert s.value(3) == pytest.approx(0.7666667)
    assert s.value(9) == pytest.approx(0.5)
    assert s.value(20) == pytest.approx(0.5)
    # `epochs` wins over total_epochs
    assert s.value(9, total_epochs=100) == pytest.approx(0.5)


def test_linear_uses_total_epochs() -> None:
    s = Schedule(kind="linear", start=0.0, end=1.0)
    assert s.values(5) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    # one-epoch ramp: start at epoch 0, end afterwards
    assert s.value(0, total_epochs=1) == 0.0
    assert s.value(1, total_epochs=1) == 1.0


def test_cosine_endpoints_and_midpoint() -> None:
    s = Schedule(kind="cosine", start=1.0, end=0.0, epochs=11)
    assert s.value(0) == pytest.approx(1.0)
    assert s.value(5) == pytest.approx(0.5)
    assert s.value(10) == pytest.approx(0.0, abs=1e-12)
    assert s.value(30) == pytest.approx(0.0, abs=1e-12)
    # (1 + cos(0.2 pi)) / 2 = (1 + 0.80901699) / 2
    assert s.value(2) == pytest.approx(0.9045085)
    up = Schedule(kind="cosine", start=2.0, end=6.0)
    assert up.value(0, 5) == pytest.approx(2.0)
    assert up.value(2, 5) == pytest.approx(4.0)
    assert up.value(4, 5) == pytest.approx(6.0)


def test_ramp_without_length_raises() -> None:
    s = Schedule(kind="linear", start=1.0, end=0.0)
    with pytest.raises(ValueError, match="epochs"):
        s.value(3)
    with pytest.raises(ValueError, match="epoch"):
        Schedule(start=1.0).value(-1)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "linear", "start": 1.0}, "end"),
        ({"kind": "cosine", "start": 1.0}, "end"),
        ({"kind": "step", "start": 1.0}, "step"),
        ({"kind": "step", "start": 1.0, "step": -0.1, "every": 0}, "every"),
        ({"kind": "linear", "start": 1.0, "end": 0.0, "epochs": 0}, "epochs"),
        ({"kind": "exp", "start": 1.0}, "kind"),
        ({"start": 1.0, "stop": 2.0}, "stop"),
        ({"start": 5.0, "step": -0.5}, "step"),  # forgot kind: step
        ({"start": 1.0, "end": 0.0}, "end"),
        ({"kind": "step", "start": 5.0, "step": -0.5, "floor": 6.0}, "floor"),
        ({"kind": "step", "start": 1.0, "step": 0.5, "floor": 0.5}, "floor"),
        ({"start": True}, "boolean"),
        ({"start": float("nan")}, "start"),
        ({}, "start"),
    ],
)
def test_bad_specs_raise(spec: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Schedule.model_validate(spec)


def test_frozen() -> None:
    s = Schedule(start=1.0)
    with pytest.raises(ValidationError):
        s.start = 2.0  # type: ignore[misc]


def test_as_schedule() -> None:
    assert as_schedule(3) == Schedule(kind="constant", start=3.0)
    assert as_schedule(0.5).value(10) == 0.5
    s = Schedule(kind="linear", start=1.0, end=0.0, epochs=3)
    assert as_schedule(s) is s
    assert as_schedule({"kind": "linear", "start": 1.0, "end": 0.0, "epochs": 3}) == s
    with pytest.raises(TypeError):
        as_schedule(True)
    with pytest.raises(TypeError):
        as_schedule("4.0")  # type: ignore[arg-type]


class _Job(BaseModel):
    temperature: ScheduleLike
    alpha: ScheduleLike = Schedule(start=0.9)


def test_schedule_like_field_accepts_number_and_mapping() -> None:
    job = _Job.model_validate({"temperature": 4.0})
    assert job.temperature == Schedule(kind="constant", start=4.0)
    assert job.alpha.value(0) == 0.9
    assert _Job.model_validate({"temperature": 2}).temperature.value(5) == 2.0
    job = _Job.model_validate(
        {"temperature": {"kind": "step", "start": 5.0, "step": -0.5, "every": 10, "floor": 1.0}}
    )
    assert job.temperature.value(25) == 4.0
    assert _Job(temperature=Schedule(start=3.0)).temperature.start == 3.0


def test_schedule_like_field_rejects_bool_and_bad_specs() -> None:
    with pytest.raises(ValidationError, match="boolean"):
        _Job.model_validate({"temperature": True})
    with pytest.raises(ValidationError, match="end"):
        _Job.model_validate({"temperature": {"kind": "linear", "start": 1.0}})


@pytest.mark.parametrize(
    "schedule",
    [
        Schedule(start=4.0),
        Schedule(kind="step", start=5.0, step=-0.5, every=10, floor=1.0),
        Schedule(kind="cosine", start=1.0, end=0.0, epochs=11),
    ],
)
def test_full_dump_loads_back(schedule: Schedule) -> None:
    # a resolved job file lists every field, nulls and defaults included
    dumped = schedule.model_dump(mode="json")
    assert "end" in dumped and "every" in dumped
    assert Schedule.model_validate(dumped) == schedule


def test_explicit_defaults_of_other_kinds_are_fine() -> None:
    assert Schedule.model_validate({"start": 2.0, "end": None, "every": 1}).value(3) == 2.0
    with pytest.raises(ValidationError, match="every"):
        Schedule.model_validate({"kind": "linear", "start": 1.0, "end": 0.0, "every": 2})


def test_piecewise_holds_each_value_from_its_epoch() -> None:
    s = Schedule.model_validate({"kind": "piecewise", "start": 4.0, "changes": {3: 4.8, 6: 5.5}})
    assert s.values(8) == [4.0, 4.0, 4.0, 4.8, 4.8, 4.8, 5.5, 5.5]
    assert s.value(100) == 5.5  # past the last change: its value
    assert s.describe() == "4, 4.8 from 3, 5.5 from 6"
    # a resolved job writes epochs as strings (JSON keys); they load back as epochs
    assert Schedule.model_validate(s.model_dump(mode="json")) == s


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "piecewise", "start": 1.0}, "changes"),
        ({"kind": "piecewise", "start": 1.0, "changes": {}}, "changes"),
        ({"kind": "piecewise", "start": 1.0, "changes": {0: 2.0}}, "epochs >= 1"),
        ({"start": 1.0, "changes": {2: 2.0}}, "only used by kind=piecewise"),
    ],
)
def test_bad_piecewise_specs_raise(spec: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Schedule.model_validate(spec)
