"""Distillation mathematics without Ray: losses, schedules, adapters, weighting, feature taps and
the :class:`Distiller` module that puts them together."""

from raydistill.distill.adapters import (
    ConvAdapter,
    LinearAdapter,
    PoolLinearAdapter,
    build_adapter,
)
from raydistill.distill.cross_modal import (
    ALIGNMENT_TERMS,
    CrossModalDistiller,
    ModalMapping,
    build_modal_mapping,
)
from raydistill.distill.distiller import Distiller, DistillLoss
from raydistill.distill.feature_losses import (
    AttentionVariant,
    FeatureLossKind,
    attention_loss,
    attention_loss_reference,
    attention_map,
    cosine_feature_loss,
    feature_loss,
)
from raydistill.distill.losses import (
    DistillMethod,
    combine,
    dkd_loss,
    dkd_terms,
    hard_loss,
    scale_grad,
    soft_target_loss,
    weighted_sum,
)
from raydistill.distill.schedules import Schedule, ScheduleLike, as_schedule
from raydistill.distill.taps import FeatureTap, feature_shapes
from raydistill.distill.terms import FEATURE_TERMS, SOFT_TERMS, FeatureTerm, SoftTerm
from raydistill.distill.weighting import WeightingKind, sample_weights

__all__ = [
    "ALIGNMENT_TERMS",
    "FEATURE_TERMS",
    "SOFT_TERMS",
    "AttentionVariant",
    "ConvAdapter",
    "CrossModalDistiller",
    "DistillLoss",
    "DistillMethod",
    "Distiller",
    "FeatureLossKind",
    "FeatureTap",
    "FeatureTerm",
    "LinearAdapter",
    "ModalMapping",
    "PoolLinearAdapter",
    "Schedule",
    "ScheduleLike",
    "SoftTerm",
    "WeightingKind",
    "as_schedule",
    "attention_loss",
    "attention_loss_reference",
    "attention_map",
    "build_adapter",
    "build_modal_mapping",
    "combine",
    "cosine_feature_loss",
    "dkd_loss",
    "dkd_terms",
    "feature_loss",
    "feature_shapes",
    "hard_loss",
    "sample_weights",
    "scale_grad",
    "soft_target_loss",
    "weighted_sum",
]
