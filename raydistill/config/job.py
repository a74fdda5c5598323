"""The whole job: its sections, and the checks that span them (task against data, text models
against text rows, the tune space against the job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from raydistill.config.base import Section
from raydistill.config.data import DataConfig
from raydistill.config.distill import DistillConfig, check_schedule_ranges
from raydistill.config.errors import KeyedError, validation_lines
from raydistill.config.lm import LMConfig
from raydistill.config.models import StudentConfig, TeacherConfig
from raydistill.config.scaling import ScalingConfig
from raydistill.config.storage import CacheConfig, OutputConfig, is_uri, run_uri, working_copy
from raydistill.config.train import TrainConfig
from raydistill.config.tune import TuneConfig
from raydistill.distill.cross_modal import ALIGNMENT_TERMS
from raydistill.tune.space import SpaceError, frozen_reason, set_path


class JobConfig(Section):
    """A whole distillation job, as written in ``jobs/*.yaml``."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="the run's name and its directory under output.storage_path (load_job:"
        " the job file's stem unless set)",
    )
    seed: int = Field(0, description="seeds training (model init, shuffles, augmentation)")
    task: Literal["classification", "detection", "cross_modal", "causal_lm"] = Field(
        "classification",
        description="classification: images, tensors or text (data.text); detection: COCO-format"
        " data, torchvision detectors, mAP; cross_modal: an image teacher guides a text student"
        " over paired rows through distill.modal_mapping; causal_lm: token-level distillation"
        " of hf: causal language models on text (section lm)",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="the examples")
    teacher: TeacherConfig = Field(..., description="the model distilled from")
    student: StudentConfig = Field(..., description="the model trained")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="the objective")
    train: TrainConfig = Field(default_factory=TrainConfig, description="the optimization")
    scaling: ScalingConfig = Field(
        default_factory=ScalingConfig, description="Ray Train workers and the teacher pool"
    )
    cache: CacheConfig = Field(default_factory=CacheConfig, description="the teacher cache")
    output: OutputConfig = Field(default_factory=OutputConfig, description="the run directory")
    tune: TuneConfig | None = Field(None, description="the search run by `raydistill tune`")
    lm: LMConfig | None = Field(
        None, description="task: causal_lm: row format and token loss; null: its defaults"
    )

    @model_validator(mode="before")
    @classmethod
    def _detection_temperature(cls, raw: Any) -> Any:
        """Detection heads distil best at a low temperature (1-3): 2 unless the job says."""
        if isinstance(raw, dict) and raw.get("task") == "detection":
            distill = raw.get("distill") or {}
            if isinstance(distill, dict) and "temperature" not in distill:
                raw = {**raw, "distill": {**distill, "temperature": 2.0}}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _cross_modal_defaults(cls, raw: Any) -> Any:
        """Cross-modal jobs learn mostly from the aligned embeddings: feature_weight 1 and
        cosine alignment (scale-free across modalities) unless the job says."""
        if isinstance(raw, dict) and raw.get("task") == "cross_modal":
            distill = raw.get("distill") or {}
            if isinstance(distill, dict):
                defaults = {"feature_weight": 1.0, "feature_loss": "cosine"}
                raw = {**raw, "distill": {**defaults, **distill}}
        return raw

    @model_validator(mode="after")
    def _task_fits_data(self) -> JobConfig:
        detection = self.task == "detection"
        if detection != (self.data.source == "coco"):
            raise KeyedError(
                "task", "detection reads data.source: coco, and coco data needs task: detection"
            )
        if detection and self.tune is not None:
            raise KeyedError("tune", "tuning detection jobs is not supported yet")
        if detection and self.distill.feature_layers:
            raise KeyedError(
                "distill.feature_layers", "detection pairs FPN levels: use distill.detection.levels"
            )
        if self.lm is not None and self.task != "causal_lm":
            raise KeyedError("lm", "only task: causal_lm reads the lm section")
        if not detection:
            self._sides_fit_data()
        return self

    @model_validator(mode="after")
    def _labels_of_a_share(self) -> JobConfig:
        """With ``data.labelled_fraction`` the student must not read the labels of the other
        rows: settings that consume every row's label on the student's side are refused."""
        if self.data.labelled_fraction is None:
            return self
        reads_labels = {
            "distill.method": ("dkd", self.distill.method == "dkd"),
            "distill.weighting": ("teacher_correct", self.distill.weighting == "teacher_correct"),
            "data.balance": ("set", self.data.balance is not None),
        }
        for key, (value, refused) in reads_labels.items():
            if refused:
                raise KeyedError(
                    key,
                    f"{value} reads the label of every training row, which"
                    " data.labelled_fraction hides from the student: use method kd, another"
                    " weighting and no balance",
                )
        return self

    def _sides_fit_data(self) -> None:
        reads_text = {
            side: getattr(self, side).text_tokenizer is not None for side in ("teacher", "student")
        }
        has_text = self.data.text is not None
        for side, text in reads_text.items():
            if text and not has_text:
                raise KeyedError(
                    side,
                    f"{getattr(self, side).model} reads text but the data has none: set"
                    " data.text (or use source csv, jsonl, parquet or text_folder)",
                )
        cross = self.task == "cross_modal"
        if cross and (reads_text["teacher"] or not reads_text["student"]):
            raise KeyedError(
                "task",
                "cross_modal pairs an image teacher (no tokenizer) with a text student"
                " (an hf: model, or a model with a tokenizer)",
            )
        if has_text and not cross and not all(reads_text.values()):
            side = next(k for k, v in reads_text.items() if not v)
            raise KeyedError(
                side,
                "text jobs need text models on both sides: an hf: model or a tokenizer"
                " (an image teacher with a text student is task: cross_modal)",
            )
        if self.distill.modal_mapping is not None and not cross:
            raise KeyedError("distill.modal_mapping", "only task: cross_modal maps modalities")
        if cross and self.distill.feature_loss not in ALIGNMENT_TERMS:
            raise KeyedError(
                "distill.feature_loss", f"cross_modal aligns by {' or '.join(ALIGNMENT_TERMS)}"
            )
        if cross and not self.distill.feature_layers:
            raise KeyedError(
                "distill.feature_layers",
                "cross_modal aligns a teacher embedding with a student one: name the pair, e.g."
                " {pooled: avgpool}",
            )

    @model_validator(mode="after")
    def _schedule_ranges(self) -> JobConfig:
        check_schedule_ranges(self.distill, self.train.epochs)
        return self

    @model_validator(mode="after")
    def _space_fits_job(self) -> JobConfig:
        """Every searched field exists, may vary between trials, and each bound of its
        distribution gives a valid job."""
        if self.tune is None:
            return self
        if not self.tune.space:
            raise KeyedError("tune.space", "is empty: name at least one job field to search")
        base = self.model_dump(mode="json", exclude={"tune"})
        for dim in self.tune.dimensions:
            key = f"tune.space.{dim.key}"
            reason = frozen_reason(dim.path)
            if reason is None and dim.path == ("seed",) and self.data.augment is not None:
                reason = "seed picks the augmented views the shared teacher pass labelled"
            if reason is not None:
                raise KeyedError(key, reason)
            for value in dim.corners():
                try:
                    JobConfig.model_validate(_set_key(base, dim.path, value, key))
                except ValidationError as exc:
                    why = validation_lines(exc, "", JobConfig).split("\n")[0].removeprefix(": ")
                    message = f"{dim} gives {value!r}, which the job refuses: {why}"
                    raise KeyedError(key, message) from None
        if self.tune.search == "grid":
            loose = [d.key for d in self.tune.dimensions if d.kind not in ("grid", "choice")]
            if loose:
                raise KeyedError("tune.search", f"grid cannot enumerate {', '.join(loose)}")
        if self.tune.search == "tpe":
            for d in self.tune.dimensions:
                if d.kind == "grid":
                    raise KeyedError(f"tune.space.{d.key}", "tpe draws values: use choice()")
                scalar = (bool, int, float, str, type(None))
                if d.kind == "choice" and not all(isinstance(v, scalar) for v in d.args):
                    raise KeyedError(
                        f"tune.space.{d.key}",
                        "tpe chooses among numbers or strings, not schedules: search their "
                        "fields instead (alpha.start, alpha.end)",
                    )
        if self.tune.scheduler == "pbt":
            if self.task != "classification":
                raise KeyedError("tune.scheduler", "pbt supports task: classification only")
            if not self.tune.mutations:
                raise KeyedError(
                    "tune.scheduler",
                    "pbt perturbs the space's non-grid entries, and there are none: give a "
                    "uniform/loguniform/quniform/randint/choice entry",
                )
        return self

    @property
    def run_dir(self) -> Path:
        """Absolute directory holding everything this job writes: for a storage URI, the
        run's local working copy (:mod:`raydistill.remote`)."""
        storage = str(self.output.storage_path)
        if is_uri(storage):
            return working_copy(run_uri(storage, self.name))
        return (Path(storage.removeprefix("file://")).expanduser() / self.name).resolve()

    @property
    def pool_feature_layers(self) -> list[str]:
        """Teacher layers whose features the pool ships with each row."""
        if self.distill.features_from != "pool":
            return []
        return [pair.teacher for pair in self.distill.feature_layers]

    @property
    def cache_dir(self) -> Path:
        """Where the teacher cache of this job lives."""
        if self.cache.path is not None:
            return Path(self.cache.path).expanduser().resolve()
        return self.run_dir / "teacher_cache"

    def teacher_train(self) -> TrainConfig:
        """``train`` with the teacher stage's overrides applied."""
        return self.train.model_copy(update=self.teacher.train.model_dump(exclude_none=True))

    def to_yaml(self) -> str:
        """The resolved job as YAML (paths as strings), loadable by :func:`load_job`."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _set_key(raw: dict[str, Any], path: tuple[str, ...], value: Any, key: str) -> dict[str, Any]:
    try:
        return set_path(raw, path, value)
    except SpaceError as exc:
        raise KeyedError(key, str(exc).split(": ", 1)[1]) from None
