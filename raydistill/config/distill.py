"""The ``distill`` section: the objective a student is trained on, and where teacher outputs come
from. :class:`~raydistill.distill.Distiller` validates its keywords through this section too, so
every range is defined once, here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from raydistill.config.base import Section
from raydistill.config.errors import KeyedError
from raydistill.distill.feature_losses import AttentionVariant, FeatureLossKind
from raydistill.distill.losses import DistillMethod
from raydistill.distill.schedules import Schedule, ScheduleLike
from raydistill.distill.weighting import WeightingKind


class FeaturePair(Section):
    """One student layer matched with one teacher layer (dotted module names)."""

    student: str = Field(..., description="the student's layer, e.g. layer3 or pooled")
    teacher: str = Field(..., description="the teacher's layer, e.g. layer4 or avgpool")


class DetectionDistillConfig(Section):
    """Detection terms (``task: detection``): the detector's own losses are the hard loss;
    ``alpha`` mixes the box head's classification loss with soft targets on shared proposals."""

    logit_kd: bool = Field(
        True,
        description="soft targets: the teacher's box-head logits on the student's proposals"
        " (an FCOS student: on the teacher's confident detections, for its positives in them)",
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
    foreground_weight: float = Field(
        4.0,
        ge=0,
        description="extra weight of foreground cells (an FCOS student imitates foreground"
        " cells only)",
    )
    teacher_box_score: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="teacher boxes kept above it (imitation's foreground; an FCOS student's"
        " point KD)",
    )


class DKDConfig(Section):
    """Decoupled KD's own weights (Zhao et al. 2022; their defaults: alpha 1, beta 8).

    As in the authors' code (mdistiller: ``CE + min(epoch / 20, 1) * DKD``): ``ce_weight: 1.0``,
    ``warmup: 20`` and ``distill.alpha: 1``. The defaults keep the job's mix
    ``alpha * DKD + (1 - alpha) * CE`` at full weight from the first epoch.
    """

    alpha: float = Field(1.0, ge=0, description="weight of the target-class term (TCKD)")
    beta: float = Field(8.0, ge=0, description="weight of the non-target-class term (NCKD)")
    warmup: int = Field(
        0,
        ge=0,
        description="epochs over which the DKD term ramps up: times min(e / warmup, 1) in the"
        " e-th epoch (1-based, so the first epoch has 1 / warmup; mdistiller: 20); 0: full"
        " weight from the start",
    )
    ce_weight: float | None = Field(
        None,
        ge=0,
        description="weight of the cross entropy with method dkd, in place of 1 - alpha"
        " (mdistiller: 1.0, with distill.alpha 1); null: 1 - alpha",
    )


class DistillConfig(Section):
    """The distillation objective: alpha * soft + (1 - alpha) * hard + feature_weight * feature.

    ``soft`` is Hinton's KD term (``method: kd``) or decoupled KD (``method: dkd``:
    ``dkd.alpha * TCKD + dkd.beta * NCKD``, both times T^2, optionally warmed up and with its own
    CE weight: see ``dkd``). ``feature`` compares tapped features by ``feature_loss``: mse, at
    (attention transfer, feature maps only) or cosine. A term whose weight is 0 is not computed.

    ``temperature`` and ``alpha`` take a number or a schedule
    (``{kind: step, start: 5.0, step: -0.5, every: 10, floor: 1.0}``; kinds: constant, linear,
    step, cosine, piecewise).
    """

    enabled: bool = Field(True, description="false: train the student alone (the baseline)")
    temperature: ScheduleLike = Field(
        default_factory=lambda: Schedule(start=4.0),
        description="softening temperature T (> 0) of the soft term: a number or a schedule",
    )
    alpha: ScheduleLike = Field(
        default_factory=lambda: Schedule(start=0.9),
        description="weight of the soft term in [0, 1] (the hard term gets 1 - alpha): a number"
        " or a schedule",
    )
    feature_layers: list[FeaturePair] = Field(
        default_factory=list,
        description="layer names (same on both sides) or {student: ..., teacher: ...} pairs",
    )
    method: DistillMethod = Field(
        "kd", description="kd: soft targets (Hinton); dkd: decoupled KD with its own weights"
    )
    dkd: DKDConfig = Field(default_factory=DKDConfig, description="used by method: dkd")
    feature_weight: float = Field(
        0.0, ge=0, description="weight of the feature term; 0: not computed"
    )
    feature_loss: FeatureLossKind = Field(
        "mse",
        description="mse: adapted features; at: attention maps sum_c |A|^p (Zagoruyko &"
        " Komodakis), feature maps only; cosine: 1 - cosine similarity",
    )
    attention_p: float = Field(2.0, gt=0, description="feature_loss at: the exponent p")
    attention_variant: AttentionVariant = Field(
        "sum",
        description="feature_loss at: sum: the student's map resized (pooled or bilinearly"
        " upsampled) to the teacher's, squared distance summed over positions; reference: as"
        " the authors' code, averaged over positions (the sum / (H*W)), the larger map"
        " average-pooled to the smaller's size (their code weighs the sum over pairs by 1000;"
        " here pairs are averaged)",
    )
    feature_grad_scale: float = Field(
        1.0,
        ge=0,
        description="factor on the feature term's gradient into the student's backbone (the"
        " adapters or modal mapping get the full gradient); 0: only they learn from it",
    )
    weighting: WeightingKind = Field("none", description="dynamic per-sample soft-loss weights")
    features_from: Literal["pool", "worker"] = Field(
        "pool",
        description="pool: the teacher actors ship tapped features with each row; worker: each"
        " train worker runs a frozen teacher copy for them (FPN-sized maps are too heavy to ship)",
    )
    feature_dtype: Literal["float32", "float16"] = Field(
        "float32", description="dtype of features shipped by the pool (and cached)"
    )
    detection: DetectionDistillConfig = Field(
        default_factory=DetectionDistillConfig, description="task detection: its terms"
    )
    modal_mapping: Literal["linear", "mlp"] | None = Field(
        None,
        description="task cross_modal: the learned map from the teacher's embedding width to the"
        " student's (trained jointly with the student); null: linear for cross_modal jobs",
    )
    teacher_pass: Literal["once", "per_epoch", "cache", "generate"] = Field(
        "once",
        description="once: the teacher pool labels the data once per stage and its outputs stay"
        " in Ray's object store; per_epoch: the pool runs inside every epoch's stream; cache:"
        " read the Parquet teacher cache (built by `raydistill cache`, or first when missing);"
        " generate (causal_lm): the pool answers the train prompts and the student trains on"
        " the answers (lm.generate)",
    )
    once_max_mb: float | None = Field(
        None,
        gt=0,
        description="teacher_pass once: above this many MB of rows (inputs and outputs of train"
        " and val) the pass is written through the teacher cache instead of held in the object"
        " store; null: half the object store",
    )

    @field_validator("feature_layers", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return [{"student": s, "teacher": t} for s, t in value.items()]
        if isinstance(value, list):
            return [{"student": v, "teacher": v} if isinstance(v, str) else v for v in value]
        return value


def check_schedule_ranges(distill: DistillConfig, epochs: int | None) -> None:
    """KeyedError unless the temperature stays > 0 and alpha within [0, 1] at every epoch of a
    run of ``epochs`` (None: the run length is unknown, only epoch 0 is checked, and a
    linear/cosine schedule without its own ``epochs`` is a ValueError)."""
    span = range(epochs if epochs is not None else 1)
    temps = [distill.temperature.value(e, epochs) for e in span]
    if min(temps) <= 0:
        raise KeyedError("distill.temperature", f"must stay > 0, reaches {min(temps):g}")
    alphas = [distill.alpha.value(e, epochs) for e in span]
    if min(alphas) < 0 or max(alphas) > 1:
        bad = min(alphas) if min(alphas) < 0 else max(alphas)
        raise KeyedError("distill.alpha", f"must stay within [0, 1], reaches {bad:g}")
