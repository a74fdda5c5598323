"""The job schema: everything a run does is visible in its YAML.

A job file is parsed into :class:`JobConfig`; every field's default is documented here, and the
resolved job (defaults filled in) is written into the run directory. Errors name the offending
key path (``distill.alpha.start``) and say why.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raydistill.data.augment import AugmentOp, RandomCrop
from raydistill.distill.losses import DistillMethod, FeatureLossKind
from raydistill.distill.schedules import Schedule, ScheduleLike
from raydistill.distill.weighting import WeightingKind
from raydistill.tune.space import (
    Dimension,
    SpaceError,
    frozen_reason,
    parse_dimension,
    qualify,
    set_path,
)


class JobError(ValueError):
    """A job file that cannot be run: the message names the key path or file and says why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not Path(value).expanduser().exists():
        raise ValueError(f"file not found: {value}")
    return Path(value).expanduser() if value is not None else None


class SplitConfig(_Section):
    """How a source without predefined splits is cut into train/val/test (stratified, seeded)."""

    val: float = Field(0.2, gt=0, lt=1, description="share of the data for validation")
    test: float = Field(0.2, gt=0, lt=1, description="share of the data for the final test")
    seed: int = Field(0, description="split seed, fixed apart from the training seed")

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(f"val + test = {self.val + self.test:.2f} leaves no training data")
        return self


class BalanceConfig(_Section):
    """Class balancing while streaming (no full shuffle), reseeded every epoch."""

    keep_ratio: float | None = Field(
        None, gt=0, le=1, description="share of rows kept for classes above the target"
    )
    repeat_rare: bool = Field(True, description="repeat classes below the target up to it")
    target: float | None = Field(None, gt=0, description="rows per class; null: mean count")
    counts: list[int] | None = Field(
        None, description="class counts of the train split; null: counted once from the data"
    )


class AugmentConfig(_Section):
    """Seeded augmentation of the training split, applied before the teacher.

    ``views`` augmented copies are made; epoch ``e`` trains on view ``e % views``, and the
    teacher labels every view once (with ``teacher_pass: once`` or ``cache``).
    """

    views: int = Field(4, ge=1, description="augmented copies of the training set")
    ops: list[AugmentOp] = Field(
        default_factory=lambda: [RandomCrop(padding=1)],
        description="applied in order: random_crop, hflip, random_erasing, gaussian_noise,"
        " normalize",
    )


class CocoSplitPaths(_Section):
    """One COCO-format split: an image folder and its instances JSON (local paths or URIs)."""

    images: str
    annotations: str

    @model_validator(mode="after")
    def _exist(self) -> CocoSplitPaths:
        for key in ("images", "annotations"):
            value = getattr(self, key)
            if "://" not in value and not Path(value).expanduser().exists():
                raise _KeyedError(key, f"not found: {value}")
        return self


class CocoConfig(_Section):
    """COCO-format detection data (``data.source: coco``, ``task: detection``)."""

    train: CocoSplitPaths
    val: CocoSplitPaths
    test: CocoSplitPaths | None = Field(None, description="null: report on val")
    image_size: int = Field(
        512,
        ge=32,
        description="longest image side in pixels: images shrink to it before they travel,"
        " and teacher and student both resize to it (so proposals carry over)",
    )
    flip: bool = Field(True, description="mirror half the training images each epoch (seeded)")
    min_box_size: float = Field(1.0, ge=0, description="boxes thinner than this (px) are dropped")


class TextConfig(_Section):
    """Text rows: ``column`` holds the text, tokenized inside the Ray Data pipeline by each
    model's own tokenizer into packed token rows int64 [N, 2, max_length] (ids, mask)."""

    column: str = Field("text", description="the text column (csv/jsonl/parquet)")
    max_length: int = Field(128, ge=4, le=8192, description="tokens per row (padded and cut)")


class DataConfig(_Section):
    """Where the examples come from.

    ``digits`` ships with scikit-learn. ``npz`` reads arrays ``inputs`` [N, ...] and ``labels``
    [N] from ``path``; ``parquet`` reads ``input_column`` (a tensor or list column) and
    ``label_column`` from a file or directory at ``path`` (local or any pyarrow filesystem URI);
    ``jsonl`` does the same for JSON lines (inputs as nested lists).
    ``image_folder`` reads ``path/<class name>/*.{png,jpg,...}``; classes are the sorted folder
    names. Text: ``csv``, ``jsonl`` or ``parquet`` rows with ``text.column`` and
    ``label_column`` (integer labels, or class names: sorted into ids), or ``text_folder``:
    ``path/<class name>/*.txt``; ``text`` is set by default for csv and text_folder. A
    ``task: cross_modal`` job reads both ``input_column`` (the teacher's images) and the text.
    ``fashion_mnist`` reads the four standard idx(.gz) files from ``path`` (default
    ``/usr/share/datasets/fashion-mnist/``, Debian package ``dataset-fashion-mnist``) and keeps
    their train/test parts: val is cut from train (``split.val``), ``split.test`` is unused.
    """

    source: Literal[
        "digits",
        "npz",
        "parquet",
        "jsonl",
        "csv",
        "image_folder",
        "text_folder",
        "fashion_mnist",
        "coco",
    ] = Field("digits", description="digits: scikit-learn's bundled 8x8 handwritten digits")
    path: str | None = Field(
        None,
        description="file or directory for npz/parquet/jsonl/image_folder; fashion_mnist: the"
        " idx directory (null: /usr/share/datasets/fashion-mnist/)",
    )
    subset: float | None = Field(
        None,
        gt=0,
        le=1,
        description="keep this share of the rows (stratified, seeded by split.seed) before"
        " splitting; with fashion_mnist, of train and of test; null: all",
    )
    input_column: str = "input"
    label_column: str = "label"
    image_size: tuple[int, int] | None = Field(
        None, description="image_folder: resize to [H, W]; null: the first image's size"
    )
    channels: Literal[1, 3] = Field(3, description="image_folder: 1 (grayscale) or 3 (RGB)")
    split: SplitConfig = Field(default_factory=SplitConfig)
    num_classes: int | None = Field(None, ge=2, description="null: taken from the source")
    shuffle_buffer: int = Field(512, ge=0, description="rows in each worker's shuffle buffer")
    balance: BalanceConfig | None = Field(None, description="null: classes as they come")
    augment: AugmentConfig | None = Field(None, description="null: no augmentation")
    coco: CocoConfig | None = Field(None, description="source coco: the splits' paths")
    text: TextConfig | None = Field(
        None, description="text rows (set by default for csv and text_folder); null: no text"
    )

    @model_validator(mode="after")
    def _path_for_files(self) -> DataConfig:
        if self.source in ("csv", "text_folder") and self.text is None:
            self.text = TextConfig()
        if self.text is not None and self.source not in ("csv", "jsonl", "parquet", "text_folder"):
            raise _KeyedError(
                "data.text",
                f"text rows come from csv, jsonl, parquet or text_folder, not {self.source}",
            )
        if self.text is not None and self.augment is not None:
            raise _KeyedError("data.augment", "augmentation applies to images, not text rows")
        if self.source == "coco":
            if self.coco is None:
                raise _KeyedError("data.coco", "source 'coco' needs data.coco: {train, val}")
        # fashion_mnist has a default directory; its files are checked when read, so that a job
        # validates on a machine without the dataset installed.
        elif self.source not in ("digits", "fashion_mnist"):
            if self.path is None:
                raise _KeyedError("data.path", f"source '{self.source}' needs a path")
            if "://" not in self.path and not Path(self.path).expanduser().exists():
                raise _KeyedError("data.path", f"not found: {self.path}")
        return self


class TrainOverrides(_Section):
    """Fields of ``train`` that the teacher stage may set differently (null: as in ``train``)."""

    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] | None = None
    lr: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)


class ModelSpec(_Section):
    """A model built from a spec string.

    ``model`` is ``torchvision:<name>`` (e.g. ``torchvision:resnet18``), ``hf:<directory or hub
    name>`` (a transformers sequence classifier, read offline from local files first; ``args``:
    ``pretrained`` (default true), ``config`` overrides such as ``num_hidden_layers``) or
    ``module.path:factory`` for user code. ``args`` are passed to the builder; ``num_classes``
    is filled in from the data when the builder accepts it. ``checkpoint`` is a local weights
    file (loaded with ``weights_only=True``). ``tokenizer`` makes the model a text model: it
    reads packed token rows [N, 2, L] made by that tokenizer (null: an ``hf:`` model's own).
    """

    model: str
    args: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Path | None = None
    tokenizer: str | None = Field(
        None, description="hf tokenizer directory or hub name; null: an hf: model's own"
    )

    @property
    def text_tokenizer(self) -> str | None:
        """The tokenizer this model reads text with, or None for a model of images/tensors."""
        if self.tokenizer is not None:
            return self.tokenizer
        prefix, _, name = self.model.partition(":")
        return name if prefix == "hf" else None

    @field_validator("model")
    @classmethod
    def _spec_shape(cls, value: str) -> str:
        prefix, sep, name = value.partition(":")
        if not sep or not prefix or not name:
            raise ValueError(
                f"'{value}' is not a model spec: use 'torchvision:<name>', 'hf:<directory>' or "
                "'module.path:factory'"
            )
        return value

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value)


class TeacherConfig(ModelSpec):
    """The teacher. With no ``checkpoint``, ``raydistill teacher`` trains it into the run directory
    (``train`` runs that stage first when needed)."""

    train: TrainOverrides = Field(default_factory=TrainOverrides)


class StudentConfig(ModelSpec):
    """The student (``checkpoint``, when set, initialises its weights)."""

    target: float | None = Field(
        None,
        gt=0,
        le=1,
        description="accuracy the student should reach; `raydistill check-teacher` checks the"
        " teacher leaves headroom above it",
    )


class FeaturePair(_Section):
    student: str
    teacher: str


class DetectionDistillConfig(_Section):
    """Detection terms (``task: detection``): the detector's own losses are the hard loss;
    ``alpha`` mixes the box head's classification loss with soft targets on shared proposals."""

    logit_kd: bool = Field(
        True, description="soft targets: the teacher's box-head logits on the student's proposals"
    )
    imitation_weight: float = Field(1.0, ge=0, description="FPN feature imitation; 0: off")
    levels: dict[str, str] | None = Field(
        None, description="student FPN level -> teacher level; null: pair levels of equal stride"
    )
    foreground: Literal["none", "gt", "gt+teacher"] = Field(
        "gt+teacher",
        description="where imitation weighs more: ground-truth boxes, plus the teacher's own"
        " confident boxes",
    )
    foreground_weight: float = Field(4.0, ge=0, description="extra weight of foreground cells")
    teacher_box_score: float = Field(0.5, gt=0, lt=1, description="teacher boxes kept above it")


class DKDConfig(_Section):
    """Decoupled KD's own weights (Zhao et al. 2022; their defaults: alpha 1, beta 8)."""

    alpha: float = Field(1.0, ge=0, description="weight of the target-class term (TCKD)")
    beta: float = Field(8.0, ge=0, description="weight of the non-target-class term (NCKD)")


class DistillConfig(_Section):
    """The distillation objective: alpha * soft + (1 - alpha) * hard + feature_weight * feature.

    ``soft`` is Hinton's KD term (``method: kd``) or decoupled KD (``method: dkd``:
    ``dkd.alpha * TCKD + dkd.beta * NCKD``, both times T^2). ``feature`` compares tapped features
    by ``feature_loss``: mse, at (attention transfer, feature maps only) or cosine.

    ``temperature`` and ``alpha`` take a number or a schedule
    (``{kind: step, start: 5.0, step: -0.5, every: 10, floor: 1.0}``; kinds: constant, linear,
    step, cosine, piecewise).
    """

    enabled: bool = Field(True, description="false: train the student alone (the baseline)")
    temperature: ScheduleLike = Field(default_factory=lambda: Schedule(start=4.0))
    alpha: ScheduleLike = Field(default_factory=lambda: Schedule(start=0.9))
    feature_layers: list[FeaturePair] = Field(
        default_factory=list,
        description="layer names (same on both sides) or {student: ..., teacher: ...} pairs",
    )
    method: DistillMethod = Field(
        "kd", description="kd: soft targets (Hinton); dkd: decoupled KD with its own weights"
    )
    dkd: DKDConfig = Field(default_factory=DKDConfig, description="used by method: dkd")
    feature_weight: float = Field(0.0, ge=0)
    feature_loss: FeatureLossKind = Field(
        "mse",
        description="mse: adapted features; at: attention maps sum_c |A|^p (Zagoruyko &"
        " Komodakis), feature maps only; cosine: 1 - cosine similarity",
    )
    attention_p: float = Field(2.0, gt=0, description="feature_loss at: the exponent p")
    feature_grad_scale: float = Field(1.0, ge=0)
    weighting: WeightingKind = Field("none", description="dynamic per-sample soft-loss weights")
    features_from: Literal["pool", "worker"] = Field(
        "pool",
        description="pool: the teacher actors ship tapped features with each row; worker: each"
        " train worker runs a frozen teacher copy for them (FPN-sized maps are too heavy to ship)",
    )
    feature_dtype: Literal["float32", "float16"] = Field(
        "float32", description="dtype of features shipped by the pool (and cached)"
    )
    detection: DetectionDistillConfig = Field(default_factory=DetectionDistillConfig)
    modal_mapping: Literal["linear", "mlp"] | None = Field(
        None,
        description="task cross_modal: the learned map from the teacher's embedding width to the"
        " student's (trained jointly with the student); null: linear for cross_modal jobs",
    )
    teacher_pass: Literal["once", "per_epoch", "cache"] = Field(
        "once",
        description="once: the teacher pool labels the data once per stage and its outputs stay"
        " in Ray's object store; per_epoch: the pool runs inside every epoch's stream; cache:"
        " read the Parquet teacher cache (built by `raydistill cache`, or first when missing)",
    )

    @field_validator("feature_layers", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return [{"student": s, "teacher": t} for s, t in value.items()]
        if isinstance(value, list):
            return [{"student": v, "teacher": v} if isinstance(v, str) else v for v in value]
        return value


class EarlyStopping(_Section):
    monitor: Literal["val_loss", "val_acc"] = Field(
        "val_loss",
        description="val_loss: the stage's objective on validation (the distillation loss for a"
        " distilled student)",
    )
    patience: int = Field(10, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(_Section):
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(64, ge=1, description="per worker")
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    lr_schedule: Literal["none", "cosine", "step"] = "cosine"
    lr_step_size: int = Field(10, ge=1, description="step schedule: epochs between decays")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="step schedule: decay factor")
    grad_clip: float | None = Field(5.0, gt=0, description="max gradient norm; null: off")
    early_stopping: EarlyStopping | None = None
    keep_best: bool = Field(True, description="evaluate the best epoch on val, not the last")
    baseline: bool = Field(
        False, description="also train the student alone, to show what distillation bought"
    )


class TeacherPoolConfig(_Section):
    """The pool of teacher actors that adds teacher outputs to each row."""

    min_actors: int = Field(1, ge=1)
    max_actors: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, gt=0, description="per actor; fractional keeps small nodes free")
    num_gpus: float = Field(0.0, ge=0, description="per actor")
    batch_size: int = Field(256, ge=1)
    resources: dict[str, float] = Field(
        default_factory=dict, description="custom resources, e.g. {teacher: 1}"
    )

    @model_validator(mode="after")
    def _range(self) -> TeacherPoolConfig:
        if self.max_actors < self.min_actors:
            raise ValueError(f"max_actors {self.max_actors} < min_actors {self.min_actors}")
        return self


class ScalingConfig(_Section):
    workers: int | list[int] = Field(
        2,
        description="Ray Train workers (DDP); [min, max]: elastic, starts with as many as the "
        "cluster holds (at least min) and grows toward max as nodes join",
    )
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="custom resources, e.g. {student: 1}"
    )
    max_failures: int = Field(0, ge=-1, description="worker failures survived; -1: unlimited")
    teacher_pool: TeacherPoolConfig = Field(default_factory=TeacherPoolConfig)

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

    @property
    def min_workers(self) -> int:
        return self.workers if isinstance(self.workers, int) else self.workers[0]

    @property
    def max_workers(self) -> int:
        return self.workers if isinstance(self.workers, int) else self.workers[1]


class CacheConfig(_Section):
    """The offline teacher cache: Parquet rows of (input, label, teacher outputs) + a manifest."""

    path: Path | None = Field(None, description="null: <run directory>/teacher_cache")
    codec: Literal["fp32", "fp16", "topk"] = Field(
        "fp32", description="how teacher logits are stored (topk keeps the tail mass)"
    )
    k: int = Field(16, ge=1, description="logits kept per sample by the topk codec")


class OutputConfig(_Section):
    storage_path: Path = Field(Path("runs"), description="runs go to storage_path/name/")
    keep_checkpoints: int = Field(2, ge=1)
    report: bool = Field(
        True, description="write report.md and report.html (table, plots) at the end of train"
    )
    tensorboard: bool = Field(
        False, description="write each epoch's metrics as TensorBoard events (run dir/tensorboard)"
    )


class TuneConfig(_Section):
    """``raydistill tune``: a search over job fields, every trial reading one teacher pass.

    ``space`` maps job key paths to distributions (see :mod:`raydistill.tune.space`)::

        space:
          temperature.start: uniform(1, 10)
          alpha: choice([0.5, {kind: linear, start: 0.9, end: 0.1}])
    """

    space: dict[str, Any] = Field(
        default_factory=dict,
        description="job key path -> uniform/loguniform/quniform/randint/choice/grid expression",
    )
    num_samples: int = Field(8, ge=1, description="trials (with grid: samples per grid point)")
    max_concurrent_trials: int = Field(2, ge=1)
    scheduler: Literal["asha", "fifo", "pbt"] = Field(
        "asha",
        description="asha: stop poor trials early; fifo: run every trial to the end; pbt:"
        " Population Based Training, poor trials continue from a good trial's checkpoint with"
        " perturbed values (the values then change during training: a discovered schedule)",
    )
    grace_period: int = Field(2, ge=1, description="asha: epochs every trial gets")
    reduction_factor: float = Field(2.0, gt=1, description="asha: 1/r of trials go on per rung")
    perturbation_interval: int = Field(
        2, ge=1, description="pbt: epochs between exploit/explore steps"
    )
    quantile_fraction: float = Field(
        0.25, gt=0, le=0.5, description="pbt: the bottom share copies the top share"
    )
    resample_probability: float = Field(
        0.25, ge=0, le=1, description="pbt: chance a value is redrawn instead of perturbed"
    )
    search: Literal["random", "grid", "tpe"] = Field(
        "random",
        description="random: sample the space; grid needs only grid()/choice() entries; tpe:"
        " Optuna's Tree-structured Parzen Estimator, each trial drawn where earlier trials did"
        " well (pip install 'raydistill[tpe]'; choices of numbers or strings, no grid())",
    )
    metric: Literal["val_acc", "val_loss", "val_ce"] = "val_acc"
    mode: Literal["max", "min"] = "max"
    epochs: int | None = Field(None, ge=1, description="per trial; null: train.epochs")
    workers_per_trial: int = Field(1, ge=1, description="Ray Train workers of each trial")
    cpus_per_worker: float | None = Field(
        None, gt=0, description="per trial worker; null: scaling.cpus_per_worker"
    )
    use_gpu: bool | None = Field(None, description="per trial worker; null: scaling.use_gpu")
    resources_per_worker: dict[str, float] | None = Field(
        None,
        description="per trial worker, e.g. {GPU: 0.25} to fit four trials on one GPU (with"
        " use_gpu: true) or {student: 1}; null: scaling.resources_per_worker",
    )
    shared_teacher: bool = Field(
        True,
        description="true: one teacher pass (the cache) serves every trial; false: each trial"
        " runs its own teacher pass, as single-process frameworks do (for comparison)",
    )

    @property
    def trials(self) -> int:
        """Trials the search runs: ``num_samples`` times each combination of grid values."""
        grid = 1
        for dim in self.dimensions:
            if dim.kind == "grid" or (self.search == "grid" and dim.kind == "choice"):
                grid *= len(dim.args)
        return self.num_samples * grid

    @property
    def dimensions(self) -> list[Dimension]:
        """The parsed space, with ``distill.`` prefixed where it was left out."""
        top, inner = set(JobConfig.model_fields), set(DistillConfig.model_fields)
        dims = []
        for key, spec in self.space.items():
            dim = parse_dimension(key, spec)
            path = qualify(dim.path, top, inner)
            dims.append(Dimension(path, dim.kind, dim.args))
        return dims

    @property
    def mutations(self) -> list[Dimension]:
        """The dimensions PBT perturbs: all but grid points (with ``search: grid``, choices
        are grid points too)."""
        return [
            d
            for d in self.dimensions
            if d.kind != "grid" and not (self.search == "grid" and d.kind == "choice")
        ]

    def trial_scaling(self, scaling: dict[str, Any]) -> dict[str, Any]:
        """A trial's ``scaling`` section (as a dict): the job's, with the per-trial workers
        and resources set."""
        out = {**scaling, "workers": self.workers_per_trial}
        for name in ("cpus_per_worker", "use_gpu", "resources_per_worker"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @field_validator("space")
    @classmethod
    def _parses(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, spec in value.items():
            try:
                parse_dimension(key, spec)
            except SpaceError as exc:
                raise _KeyedError(f"tune.space.{key}", str(exc).split(": ", 1)[1]) from None
        return value


class JobConfig(_Section):
    """A whole distillation job, as written in ``jobs/*.yaml``."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    task: Literal["classification", "detection", "cross_modal"] = Field(
        "classification",
        description="classification: images, tensors or text (data.text); detection: COCO-format"
        " data, torchvision detectors, mAP; cross_modal: an image teacher guides a text student"
        " over paired rows through distill.modal_mapping",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig
    student: StudentConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    tune: TuneConfig | None = Field(None, description="the search run by `raydistill tune`")

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
            raise _KeyedError(
                "task", "detection reads data.source: coco, and coco data needs task: detection"
            )
        if detection and self.tune is not None:
            raise _KeyedError("tune", "tuning detection jobs is not supported yet")
        if detection and self.distill.feature_layers:
            raise _KeyedError(
                "distill.feature_layers", "detection pairs FPN levels: use distill.detection.levels"
            )
        if not detection:
            self._sides_fit_data()
        return self

    def _sides_fit_data(self) -> None:
        reads_text = {
            side: getattr(self, side).text_tokenizer is not None for side in ("teacher", "student")
        }
        has_text = self.data.text is not None
        for side, text in reads_text.items():
            if text and not has_text:
                raise _KeyedError(
                    side,
                    f"{getattr(self, side).model} reads text but the data has none: set"
                    " data.text (or use source csv, jsonl, parquet or text_folder)",
                )
        cross = self.task == "cross_modal"
        if cross and (reads_text["teacher"] or not reads_text["student"]):
            raise _KeyedError(
                "task",
                "cross_modal pairs an image teacher (no tokenizer) with a text student"
                " (an hf: model, or a model with a tokenizer)",
            )
        if has_text and not cross and not all(reads_text.values()):
            side = next(k for k, v in reads_text.items() if not v)
            raise _KeyedError(
                side,
                "text jobs need text models on both sides: an hf: model or a tokenizer"
                " (an image teacher with a text student is task: cross_modal)",
            )
        if self.distill.modal_mapping is not None and not cross:
            raise _KeyedError("distill.modal_mapping", "only task: cross_modal maps modalities")
        if cross and self.distill.feature_loss not in ("mse", "cosine"):
            raise _KeyedError("distill.feature_loss", "cross_modal aligns by mse or cosine")
        if cross and not self.distill.feature_layers:
            raise _KeyedError(
                "distill.feature_layers",
                "cross_modal aligns a teacher embedding with a student one: name the pair, e.g."
                " {pooled: avgpool}",
            )

    @model_validator(mode="after")
    def _schedule_ranges(self) -> JobConfig:
        epochs = self.train.epochs
        temps = self.distill.temperature.values(epochs)
        if min(temps) <= 0:
            raise _KeyedError("distill.temperature", f"must stay > 0, reaches {min(temps):g}")
        alphas = self.distill.alpha.values(epochs)
        if min(alphas) < 0 or max(alphas) > 1:
            bad = min(alphas) if min(alphas) < 0 else max(alphas)
            raise _KeyedError("distill.alpha", f"must stay within [0, 1], reaches {bad:g}")
        return self

    @model_validator(mode="after")
    def _space_fits_job(self) -> JobConfig:
        """Every searched field exists, may vary between trials, and each bound of its
        distribution gives a valid job."""
        if self.tune is None:
            return self
        if not self.tune.space:
            raise _KeyedError("tune.space", "is empty: name at least one job field to search")
        base = self.model_dump(mode="json", exclude={"tune"})
        for dim in self.tune.dimensions:
            key = f"tune.space.{dim.key}"
            reason = frozen_reason(dim.path)
            if reason is None and dim.path == ("seed",) and self.data.augment is not None:
                reason = "seed picks the augmented views the shared teacher pass labelled"
            if reason is not None:
                raise _KeyedError(key, reason)
            for value in dim.corners():
                try:
                    JobConfig.model_validate(_set_key(base, dim.path, value, key))
                except ValidationError as exc:
                    why = format_validation_error(exc, "").split("\n")[0].removeprefix(": ")
                    message = f"{dim} gives {value!r}, which the job refuses: {why}"
                    raise _KeyedError(key, message) from None
        if self.tune.search == "grid":
            loose = [d.key for d in self.tune.dimensions if d.kind not in ("grid", "choice")]
            if loose:
                raise _KeyedError("tune.search", f"grid cannot enumerate {', '.join(loose)}")
        if self.tune.search == "tpe":
            for d in self.tune.dimensions:
                if d.kind == "grid":
                    raise _KeyedError(f"tune.space.{d.key}", "tpe draws values: use choice()")
                scalar = (bool, int, float, str, type(None))
                if d.kind == "choice" and not all(isinstance(v, scalar) for v in d.args):
                    raise _KeyedError(
                        f"tune.space.{d.key}",
                        "tpe chooses among numbers or strings, not schedules: search their "
                        "fields instead (alpha.start, alpha.end)",
                    )
        if self.tune.scheduler == "pbt":
            if self.task != "classification":
                raise _KeyedError("tune.scheduler", "pbt supports task: classification only")
            if not self.tune.mutations:
                raise _KeyedError(
                    "tune.scheduler",
                    "pbt perturbs the space's non-grid entries, and there are none: give a "
                    "uniform/loguniform/quniform/randint/choice entry",
                )
        return self

    @property
    def run_dir(self) -> Path:
        """Absolute directory holding everything this job writes."""
        return (Path(self.output.storage_path).expanduser() / self.name).resolve()

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


class _KeyedError(ValueError):
    """A cross-field error that knows its key path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def _set_key(raw: dict[str, Any], path: tuple[str, ...], value: Any, key: str) -> dict[str, Any]:
    try:
        return set_path(raw, path, value)
    except SpaceError as exc:
        raise _KeyedError(key, str(exc).split(": ", 1)[1]) from None


# ---------------------------------------------------------------- loading and overrides


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


def _known_keys(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """Field names of the section at ``path`` (for 'did you mean' hints)."""
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


def format_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: ``<source>: <key.path>: <why>``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _KeyedError):
            key, why = ctx_error.key, str(ctx_error).split(": ", 1)[1]
        elif err["type"] == "extra_forbidden":
            why = "unknown key"
            hint = difflib.get_close_matches(str(loc[-1]), _known_keys(JobConfig, loc[:-1]), n=1)
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
