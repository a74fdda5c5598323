"""The distillation objective around a student, usable from a plain PyTorch loop or under DDP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from raydistill.distill.feature_losses import AttentionVariant, FeatureLossKind
from raydistill.distill.losses import (
    DistillMethod,
    hard_loss,
    labelled_weights,
    scale_grad,
    weighted_sum,
)
from raydistill.distill.model_io import Inputs, adapter_key, as_logits, module_device, to_device
from raydistill.distill.schedules import Schedule
from raydistill.distill.settings import (
    feature_pairs,
    keywords_from_settings,
    settings_from_keywords,
)
from raydistill.distill.taps import FeatureTap, _call, feature_shapes
from raydistill.distill.terms import FEATURE_TERMS, SOFT_TERMS
from raydistill.distill.weighting import WeightingKind, sample_weights

if TYPE_CHECKING:
    from raydistill.config.distill import DistillConfig

# Kept importable from here: the loop and the in-memory search read them from this module.
__all__ = ["DistillLoss", "Distiller", "Inputs", "as_logits"]


@dataclass
class DistillLoss:
    """The terms of one distillation loss evaluation.

    ``total``, ``soft``, ``hard`` and ``feature`` are scalar tensors; ``soft`` (the KD or DKD
    term) and ``hard`` are in nats, ``feature`` in the units of the feature loss (squared feature
    units for MSE, dimensionless for AT and cosine). A soft or feature term whose weight is 0 is
    not computed and reads 0; ``hard`` (the cross entropy) is always computed, and left out of
    ``total`` at weight 0. ``weights`` are the per-sample soft-loss weights [N], or None without
    dynamic weighting.
    """

    total: Tensor
    soft: Tensor
    hard: Tensor
    feature: Tensor
    weights: Tensor | None

    def as_floats(self) -> dict[str, float]:
        """``{"loss", "soft", "hard", "feature"}`` as Python floats, for logging."""
        return {
            "loss": float(self.total.detach()),
            "soft": float(self.soft.detach()),
            "hard": float(self.hard.detach()),
            "feature": float(self.feature.detach()),
        }


FeatureLayers = Sequence[str] | Mapping[str, str] | Sequence[tuple[str, str]]


class Distiller(nn.Module):
    """A student plus the distillation objective
    ``alpha * soft + (1 - alpha) * hard + feature_weight * feature``, where ``soft`` is the KD
    term or, with ``method="dkd"``, the decoupled KD term. A term whose weight is 0 is skipped.

    Only the student and the feature adapters are submodules: the teacher is held outside the
    module tree, so ``parameters()``, ``state_dict()``, ``.to()`` and DDP never see it. It is put
    in eval mode with ``requires_grad=False``.

    The keywords are the job's ``distill`` fields and are validated by that section of the
    schema (:class:`~raydistill.config.DistillConfig`, kept as :attr:`settings`);
    :meth:`from_config` builds a Distiller from the section itself.

    Args:
        student: the model being trained; maps inputs to logits [N, C] (or an object with
            ``.logits``).
        teacher: the frozen teacher, or None when teacher outputs come from elsewhere (e.g. a
            Ray Data pool) or for baseline training.
        temperature: softening temperature T > 0: a number or a schedule over epochs.
        alpha: weight of the soft term in [0, 1]: a number or a schedule over epochs.
        feature_layers: student/teacher layer pairs whose features are matched: a list of
            names (same name on both sides), a mapping student -> teacher, or (student, teacher)
            pairs.
        feature_weight: weight of the feature term (>= 0).
        feature_grad_scale: factor on the feature term's gradient into the student's backbone
            (the adapters get the full gradient); 0 trains only the adapters on it.
        weighting: dynamic per-sample weighting of the soft term.
        total_epochs: the run's length, sizing linear/cosine schedules without ``epochs``.
        method: the soft term: ``kd`` (soft targets) or ``dkd`` (decoupled KD,
            ``dkd_alpha * TCKD + dkd_beta * NCKD``, both times T^2).
        dkd_alpha: DKD's weight of the target-class term (>= 0).
        dkd_beta: DKD's weight of the non-target-class term (>= 0).
        dkd_warmup: epochs over which the DKD term ramps up, ``min((epoch + 1) / warmup, 1)``
            for the 0-based epoch (0: off; mdistiller: 20).
        dkd_ce_weight: the cross entropy's weight with DKD in place of ``1 - alpha`` (None:
            ``1 - alpha``; mdistiller: 1.0 with ``alpha=1``).
        feature_loss: ``mse`` (adapted features), ``at`` (attention transfer: feature maps
            only, the adapter at most resizes the student map; channel counts may differ) or
            ``cosine`` (1 - cosine similarity of adapted features).
        attention_p: the exponent p of the attention maps ``sum_c |A_c|**p`` (``at`` only).
        attention_variant: ``sum`` (summed over positions, the student's map resized to the
            teacher's) or ``reference`` (the authors' code: averaged over positions, the larger
            map pooled down), ``at`` only.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        temperature: float | Schedule | dict[str, Any] = 4.0,
        alpha: float | Schedule | dict[str, Any] = 0.9,
        feature_layers: FeatureLayers | None = None,
        feature_weight: float = 0.0,
        feature_grad_scale: float = 1.0,
        weighting: WeightingKind = "none",
        total_epochs: int | None = None,
        method: DistillMethod = "kd",
        dkd_alpha: float = 1.0,
        dkd_beta: float = 8.0,
        dkd_warmup: int = 0,
        dkd_ce_weight: float | None = None,
        feature_loss: FeatureLossKind = "mse",
        attention_p: float = 2.0,
        attention_variant: AttentionVariant = "sum",
    ) -> None:
        super().__init__()
        if teacher is student:
            raise ValueError("teacher and student are the same module; the teacher gets frozen")
        self.settings: DistillConfig = settings_from_keywords(
            total_epochs,
            temperature=temperature,
            alpha=alpha,
            feature_weight=feature_weight,
            feature_grad_scale=feature_grad_scale,
            weighting=weighting,
            method=method,
            dkd_alpha=dkd_alpha,
            dkd_beta=dkd_beta,
            dkd_warmup=dkd_warmup,
            dkd_ce_weight=dkd_ce_weight,
            feature_loss=feature_loss,
            attention_p=attention_p,
            attention_variant=attention_variant,
        )
        self.student = student
        self.total_epochs = total_epochs
        self.epoch = 0

        self.feature_pairs: list[tuple[str, str]] = feature_pairs(feature_layers)
        self.adapters = nn.ModuleDict()

        # Plain attributes (not submodules): the taps hold hooks, not parameters.
        self._student_tap: FeatureTap | None = (
            FeatureTap(student, [s for s, _ in self.feature_pairs]) if self.feature_pairs else None
        )
        self._teacher_tap: FeatureTap | None = None
        # object.__setattr__ keeps the teacher out of nn.Module's registry of children.
        object.__setattr__(self, "_teacher", teacher)
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
            if self.feature_pairs:
                self._teacher_tap = FeatureTap(teacher, [t for _, t in self.feature_pairs])

    @classmethod
    def from_config(
        cls,
        distill: DistillConfig,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        total_epochs: int,
        feature_layers: list[tuple[str, str]] | None = None,
    ) -> Distiller:
        """The Distiller of a job's ``distill`` section.

        Args:
            distill: the section (its temperature, alpha, method and dkd, feature weight,
                loss, grad scale and weighting; the data-plane fields are not read here).
            student: the model trained.
            teacher: a frozen teacher in this process, or None when its outputs arrive with the
                rows.
            total_epochs: the stage's epochs (sizes the schedules).
            feature_layers: the (student layer, teacher layer) pairs this stage matches; None
                matches none (a teacher or baseline stage; ``distill.feature_layers`` is not
                read, the stage decides).
        """
        return cls(
            student,
            teacher,
            feature_layers=feature_layers,
            total_epochs=total_epochs,
            **keywords_from_settings(distill),
        )

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen teacher (not a submodule), or None."""
        return self._teacher  # type: ignore[no-any-return]

    @property
    def method(self) -> str:
        """The soft term's method (``kd`` or ``dkd``)."""
        return self.settings.method

    @property
    def feature_loss_kind(self) -> str:
        """How matched features are compared (``mse``, ``at`` or ``cosine``)."""
        return self.settings.feature_loss

    @property
    def feature_weight(self) -> float:
        """The feature term's weight (>= 0; validated on assignment)."""
        return self.settings.feature_weight

    @feature_weight.setter
    def feature_weight(self, value: float) -> None:
        self.settings.feature_weight = value

    @property
    def feature_grad_scale(self) -> float:
        """The factor on the feature term's gradient into the backbone (validated on
        assignment)."""
        return self.settings.feature_grad_scale

    @feature_grad_scale.setter
    def feature_grad_scale(self, value: float) -> None:
        self.settings.feature_grad_scale = value

    def set_epoch(self, epoch: int) -> None:
        """Move the temperature and alpha schedules (and DKD's warm-up) to 0-based ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    @property
    def temperature(self) -> float:
        """The temperature T at the current epoch (dimensionless, > 0)."""
        return self.settings.temperature.value(self.epoch, self.total_epochs)

    @property
    def alpha(self) -> float:
        """The soft-term weight alpha at the current epoch, in [0, 1]."""
        return self.settings.alpha.value(self.epoch, self.total_epochs)

    def build_adapters(
        self,
        example_input: Inputs | None = None,
        *,
        student_shapes: Mapping[str, Sequence[int]] | None = None,
        teacher_shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, str]:
        """Create one adapter per feature pair, replacing any existing ones.

        Shapes (without the batch dimension) are taken from ``student_shapes``/``teacher_shapes``
        when given, else from one dry forward of ``example_input`` ([N, ...] or keyword inputs)
        through the student/teacher. Call before building the optimizer and before wrapping in
        DDP. Returns ``{student_layer: repr(adapter)}``; a no-op without feature pairs.
        """
        if not self.feature_pairs:
            return {}
        if student_shapes is None:
            student_shapes = self._dry_shapes(self.student, 0, example_input, "student_shapes")
        if teacher_shapes is None:
            if self.teacher is None:
                raise ValueError("without a teacher, build_adapters needs teacher_shapes")
            teacher_shapes = self._dry_shapes(self.teacher, 1, example_input, "teacher_shapes")
        adapters = nn.ModuleDict()
        for s, t in self.feature_pairs:
            if s not in student_shapes:
                raise ValueError(f"no shape given for student layer {s!r}")
            if t not in teacher_shapes:
                raise ValueError(f"no shape given for teacher layer {t!r}")
            try:
                adapters[adapter_key(s)] = self._adapter(student_shapes[s], teacher_shapes[t])
            except ValueError as err:
                raise ValueError(f"feature pair {s!r} -> {t!r}: {err}") from err
        reference = next(iter([*self.student.parameters(), *self.student.buffers()]), None)
        if reference is not None:
            adapters.to(device=reference.device)
            if reference.is_floating_point():
                adapters.to(dtype=reference.dtype)
        self.adapters = adapters
        return {s: repr(adapters[adapter_key(s)]) for s, _ in self.feature_pairs}

    def _dry_shapes(
        self, model: nn.Module, side: int, example_input: Inputs | None, what: str
    ) -> dict[str, tuple[int, ...]]:
        """The tapped shapes of one side (0: student, 1: teacher) from a dry forward."""
        if example_input is None:
            raise ValueError(f"build_adapters needs example_input or {what}")
        layers = [pair[side] for pair in self.feature_pairs]
        shapes = feature_shapes(model, layers, to_device(example_input, module_device(model)))
        tap = self._teacher_tap if side else self._student_tap
        if tap is not None:
            tap.clear()
        return shapes

    def _adapter(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
        term = FEATURE_TERMS[self.settings.feature_loss]
        return term.adapter(student_shape, teacher_shape, self.settings)

    def forward(self, inputs: Inputs) -> tuple[Tensor, dict[str, Tensor]]:
        """Run the student.

        Args:
            inputs: [N, ...] tensor (``student(inputs)``) or a mapping (``student(**inputs)``).

        Returns:
            The logits [N, C] and the adapted student features keyed by TEACHER layer name (each
            [N, *teacher_shape]; empty without feature pairs).
        """
        tap = self._student_tap
        if tap is not None:
            if len(self.adapters) != len(self.feature_pairs):
                raise RuntimeError(
                    "feature layers are set but the adapters are not built: call "
                    "build_adapters(example_input) first (before the optimizer and DDP)"
                )
            tap.clear()
        logits = as_logits(_call(self.student, inputs))
        features: dict[str, Tensor] = {}
        if tap is not None:
            try:
                for s, t in self.feature_pairs:
                    if s not in tap.features:
                        raise ValueError(f"student layer {s!r} produced no output in the forward")
                    feature = scale_grad(tap.features[s], self.feature_grad_scale)
                    features[t] = self.adapters[adapter_key(s)](feature)
            finally:
                tap.clear()
        return logits, features

    def teacher_outputs(self, inputs: Inputs) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher's logits [N, C] and raw features keyed by teacher layer name, computed
        under ``torch.no_grad`` and returned on the device of ``inputs``."""
        teacher = self.teacher
        if teacher is None:
            raise ValueError("this Distiller has no teacher; pass teacher outputs to loss()")
        if teacher.training:
            teacher.eval()
        tap = self._teacher_tap
        if tap is not None:
            tap.clear()
        first = next(iter(inputs.values())) if isinstance(inputs, Mapping) else inputs
        device = first.device if isinstance(first, Tensor) else None
        try:
            with torch.no_grad():
                logits = as_logits(_call(teacher, to_device(inputs, module_device(teacher))))
                features = dict(tap.features) if tap is not None else {}
        finally:
            if tap is not None:
                tap.clear()
        if device is not None:
            logits = logits.to(device)
            features = {k: v.to(device) for k, v in features.items()}
        return logits, features

    def loss(
        self,
        student_logits: Tensor,
        labels: Tensor,
        teacher_logits: Tensor | None = None,
        student_features: Mapping[str, Tensor] | None = None,
        teacher_features: Mapping[str, Tensor] | None = None,
        labelled: Tensor | None = None,
    ) -> DistillLoss:
        """The objective at the current epoch's temperature and alpha.

        Args:
            student_logits: [N, C].
            labels: [N] integer class indices.
            teacher_logits: [N, C], or None for baseline training (total = cross entropy).
            student_features: adapted student features keyed by teacher layer name (from
                :meth:`forward`); not read when the feature weight is 0.
            teacher_features: teacher features keyed by teacher layer name; likewise.
            labelled: bool [N], the rows whose labels count (``data.labelled_fraction``): the
                hard term is the mean cross entropy over them (0 in a batch with none), the
                soft and feature terms cover every row; None: every row is labelled.
        """
        hard = hard_loss(student_logits, labels, labelled_weights(labelled))
        zero = hard.new_zeros(())
        if teacher_logits is None:
            return DistillLoss(total=hard, soft=zero, hard=hard, feature=zero, weights=None)
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student logits {list(student_logits.shape)} and teacher logits "
                f"{list(teacher_logits.shape)} differ in shape"
            )
        teacher_logits = teacher_logits.to(student_logits.device)
        term = SOFT_TERMS[self.settings.method]
        soft_weight, hard_weight = term.weights(self.settings, self.alpha, self.epoch)
        soft, weights = zero, None
        if soft_weight != 0:
            temperature = self.temperature
            weights = sample_weights(
                self.settings.weighting, student_logits, teacher_logits, labels, temperature
            )
            soft = term.loss(
                student_logits, teacher_logits, labels, temperature, weights, self.settings
            )
        feature = zero
        if self.feature_pairs and self.feature_weight != 0:
            feature = self._feature_mean(student_features, teacher_features)
        total = weighted_sum(
            [(hard_weight, hard), (soft_weight, soft), (self.feature_weight, feature)]
        )
        if self.feature_pairs and self.feature_weight == 0:
            # The adapters stay in the autograd graph without their term: DDP errors on
            # parameters that get no gradient.
            for param in self.adapters.parameters():
                total = total + 0.0 * param.sum()
        return DistillLoss(total=total, soft=soft, hard=hard, feature=feature, weights=weights)

    def _feature_mean(
        self,
        student_features: Mapping[str, Tensor] | None,
        teacher_features: Mapping[str, Tensor] | None,
    ) -> Tensor:
        """The feature term averaged over the pairs."""
        for name, given in (("student", student_features), ("teacher", teacher_features)):
            if given is None:
                raise ValueError(f"feature layers are set but no {name}_features were given")
        assert student_features is not None and teacher_features is not None
        terms = []
        for _, t in self.feature_pairs:
            for name, given in (("student", student_features), ("teacher", teacher_features)):
                if t not in given:
                    raise ValueError(
                        f"{name}_features lack teacher layer {t!r} (have {sorted(given)})"
                    )
            terms.append(self._feature_term(student_features[t], teacher_features[t]))
        return torch.stack(terms).mean()

    def _feature_term(self, student: Tensor, teacher: Tensor) -> Tensor:
        return FEATURE_TERMS[self.settings.feature_loss].loss(student, teacher, self.settings)

    def step(self, inputs: Inputs, labels: Tensor) -> DistillLoss:
        """Teacher outputs (when there is a teacher), student forward and loss, in one call."""
        teacher_logits: Tensor | None = None
        teacher_features: dict[str, Tensor] | None = None
        if self.teacher is not None:
            teacher_logits, teacher_features = self.teacher_outputs(inputs)
        logits, student_features = self(inputs)
        return self.loss(logits, labels, teacher_logits, student_features, teacher_features)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The student's and the adapters' parameters (the same as ``parameters()``)."""
        return self.parameters()
