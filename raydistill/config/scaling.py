"""The ``scaling`` section: Ray Train workers and the teacher actor pool."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from raydistill.config.base import Section


class TeacherPoolConfig(Section):
    """The pool of teacher actors that adds teacher outputs to each row."""

    min_actors: int = Field(1, ge=1, description="actors the pool starts with")
    max_actors: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1,
        description="actors the pool may scale up to; auto: as many as the cluster holds at its"
        " largest (its live nodes, or the node types its autoscaler may launch), Ray Data"
        " growing and shrinking the pool in between with the trainers' demand",
    )
    num_cpus: float = Field(0.5, gt=0, description="per actor; fractional keeps small nodes free")
    num_gpus: float = Field(0.0, ge=0, description="per actor")
    batch_size: int = Field(256, ge=1, description="rows per teacher forward")
    resources: dict[str, float] = Field(
        default_factory=dict, description="custom resources, e.g. {teacher: 1}"
    )

    @model_validator(mode="after")
    def _range(self) -> TeacherPoolConfig:
        if self.max_actors != "auto" and self.max_actors < self.min_actors:
            raise ValueError(f"max_actors {self.max_actors} < min_actors {self.min_actors}")
        return self

    @property
    def planned_max_actors(self) -> int:
        """``max_actors`` for plans made before Ray is up (CPUs to reserve, pass-time
        estimates): ``auto`` counts as ``min_actors`` there, and is sized on the cluster
        itself when the pool starts (:func:`raydistill.runtime.pool_max_actors`)."""
        return self.min_actors if self.max_actors == "auto" else self.max_actors

    @property
    def request(self) -> dict[str, float]:
        """What one actor asks Ray for (logical CPUs, GPUs, custom resources; zeros left out)."""
        ask = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: float(v) for k, v in ask.items() if v}


class ScalingConfig(Section):
    """How many Ray Train workers train, on what resources, surviving how many failures."""

    workers: int | list[int] = Field(
        2,
        description="Ray Train workers (DDP); [min, max]: elastic, starts with as many as the "
        "cluster holds (at least min) and grows toward max as nodes join",
    )
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per train worker")
    use_gpu: bool = Field(False, description="train workers use a GPU each")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="custom resources, e.g. {student: 1}"
    )
    max_failures: int = Field(0, ge=-1, description="worker failures survived; -1: unlimited")
    in_process: bool | None = Field(
        None,
        description="train a one-worker stage in the driver's process instead of a Ray Train"
        " worker group (whose start costs 15-30 s on a small machine); null: when the job has"
        " one worker, no max_failures, no custom resources, its splits are held in memory and"
        " the cluster is the driver's one node; false: always a worker group",
    )
    in_memory_max_mb: float = Field(
        256.0,
        ge=0,
        description="a split already materialized (teacher_pass once, an in-memory source) whose"
        " rows take at most this many MB is read once per stage into each train worker's"
        " memory and iterated there every epoch, its rows shared out by row id (the same"
        " rows on the same worker every run); larger or lazy splits stream through Ray"
        " Data's split; 0: always stream",
    )
    teacher_pool: TeacherPoolConfig = Field(
        default_factory=TeacherPoolConfig, description="the actors that run the teacher"
    )

    @field_validator("workers", mode="plain")
    @classmethod
    def _workers(cls, value: Any) -> int | list[int]:
        # One clear message instead of pydantic's per-branch union errors.
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise ValueError("Input should be greater than or equal to 1")
            return value
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            low, high = value
            if low < 1 or high < low:
                raise ValueError(f"[min, max] needs 1 <= min <= max (got [{low}, {high}])")
            return [low, high]
        raise ValueError(f"must be a number of workers or [min, max] (got {value!r})")

    @model_validator(mode="after")
    def _in_process(self) -> ScalingConfig:
        if self.in_process:
            clash = [
                what
                for what, on in (
                    ("workers != 1", self.workers != 1),
                    ("max_failures", self.max_failures != 0),
                    ("resources_per_worker", bool(self.resources_per_worker)),
                )
                if on
            ]
            if clash:
                raise ValueError(
                    f"in_process: true trains one worker in the driver; it rules out "
                    f"{', '.join(clash)}"
                )
        return self

    @property
    def min_workers(self) -> int:
        return self.workers if isinstance(self.workers, int) else self.workers[0]

    @property
    def max_workers(self) -> int:
        return self.workers if isinstance(self.workers, int) else self.workers[1]
