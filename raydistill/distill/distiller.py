"""The distillation objective around a student, usable from a plain PyTorch loop or under DDP."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import torch
from torch import Tensor, nn

from raydistill.distill.adapters import ConvAdapter, build_adapter
from raydistill.distill.losses import (
    DistillMethod,
    FeatureLossKind,
    attention_loss,
    combine,
    cosine_feature_loss,
    dkd_loss,
    feature_loss,
    hard_loss,
    scale_grad,
    soft_target_loss,
)
from raydistill.distill.schedules import Schedule, as_schedule
from raydistill.distill.taps import FeatureTap, _call, feature_shapes
from raydistill.distill.weighting import WeightingKind, sample_weights

Inputs = Tensor | Mapping[str, Any]


@dataclass
class DistillLoss:
    """The terms of one distillation loss evaluation.

    ``total``, ``soft``, ``hard`` and ``feature`` are scalar tensors (zeros when a term is off);
    ``soft`` (the KD or DKD term) and ``hard`` are in nats, ``feature`` in the units of the
    feature loss (squared feature units for MSE, dimensionless for AT and cosine). ``weights``
    are the per-sample soft-loss weights [N], or None without dynamic weighting.
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


def _feature_pairs(
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


def _adapter_key(student_layer: str) -> str:
    # nn.ModuleDict keys may not contain dots.
    return student_layer.replace(".", "__")


def _module_device(module: nn.Module) -> torch.device | None:
    for tensor in [*module.parameters(), *module.buffers()]:
        return tensor.device
    return None


def _to_device(inputs: Inputs, device: torch.device | None) -> Inputs:
    if device is None:
        return inputs
    if isinstance(inputs, Mapping):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    return inputs.to(device)


def as_logits(output: Any) -> Tensor:
    """A model's output as its logits [N, C]: the tensor itself, or its ``.logits``
    (Hugging Face outputs)."""
    logits = output.logits if hasattr(output, "logits") else output
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model returned {type(output).__name__}, not logits [N, C]")
    return logits


class Distiller(nn.Module):
    """A student plus the distillation objective
    ``alpha * soft + (1 - alpha) * hard + feature_weight * feature``, where ``soft`` is the KD
    term or, with ``method="dkd"``, the decoupled KD term.

    Only the student and the feature adapters are submodules: the teacher is held outside the
    module tree, so ``parameters()``, ``state_dict()``, ``.to()`` and DDP never see it. It is put
    in eval mode with ``requires_grad=False``.

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
        method: the soft term: ``kd`` (soft targets) or ``dkd`` (decoupled KD,
            ``dkd_alpha * TCKD + dkd_beta * NCKD``, both times T^2).
        dkd_alpha: DKD's weight of the target-class term (>= 0).
        dkd_beta: DKD's weight of the non-target-class term (>= 0).
        feature_loss: ``mse`` (adapted features), ``at`` (attention transfer: feature maps
            only, the adapter just resizes the student map; channel counts may differ) or
            ``cosine`` (1 - cosine similarity of adapted features).
        attention_p: the exponent p of the attention maps ``sum_c |A_c|**p`` (``at`` only).
        feature_grad_scale: factor on the feature term's gradient into the student's backbone
            (the adapters get the full gradient); 0 trains only the adapters on it.
        weighting: dynamic per-sample weighting of the soft term.
        total_epochs: the run's length, sizing linear/cosine schedules without ``epochs``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        temperature: float | Schedule | dict[str, Any] = 4.0,
        alpha: float | Schedule | dict[str, Any] = 0.9,
        feature_layers: Sequence[str] | Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        feature_weight: float = 0.0,
        feature_grad_scale: float = 1.0,
        weighting: WeightingKind = "none",
        total_epochs: int | None = None,
        method: DistillMethod = "kd",
        dkd_alpha: float = 1.0,
        dkd_beta: float = 8.0,
        feature_loss: FeatureLossKind = "mse",
        attention_p: float = 2.0,
    ) -> None:
        super().__init__()
        if method not in get_args(DistillMethod):
            raise ValueError(f"unknown method {method!r}; expected kd or dkd")
        if dkd_alpha < 0 or dkd_beta < 0:
            raise ValueError(f"dkd alpha and beta must be >= 0, got {dkd_alpha} and {dkd_beta}")
        if feature_loss not in get_args(FeatureLossKind):
            raise ValueError(f"unknown feature_loss {feature_loss!r}; expected mse, at or cosine")
        if not attention_p > 0:
            raise ValueError(f"attention_p must be > 0, got {attention_p}")
        if teacher is student:
            raise ValueError("teacher and student are the same module; the teacher gets frozen")
        if feature_weight < 0:
            raise ValueError(f"feature_weight must be >= 0, got {feature_weight}")
        if feature_grad_scale < 0:
            raise ValueError(f"feature_grad_scale must be >= 0, got {feature_grad_scale}")
        if weighting not in get_args(WeightingKind):
            raise ValueError(
                f"unknown weighting {weighting!r}; expected one of {get_args(WeightingKind)}"
            )
        if total_epochs is not None and total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        self.student = student
        self.temperature_schedule: Schedule = as_schedule(temperature)
        self.alpha_schedule: Schedule = as_schedule(alpha)
        self.total_epochs = total_epochs
        self.feature_weight = float(feature_weight)
        self.feature_grad_scale = float(feature_grad_scale)
        self.weighting: WeightingKind = weighting
        self.method: DistillMethod = method
        self.dkd_alpha = float(dkd_alpha)
        self.dkd_beta = float(dkd_beta)
        self.feature_loss_kind: FeatureLossKind = feature_loss
        self.attention_p = float(attention_p)
        self.epoch = 0
        self._check_schedules()

        self.feature_pairs: list[tuple[str, str]] = _feature_pairs(feature_layers)
        for side, names in (
            ("student", [s for s, _ in self.feature_pairs]),
            ("teacher", [t for _, t in self.feature_pairs]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{side} layers {dupes} appear in more than one feature pair")
        keys = [_adapter_key(s) for s, _ in self.feature_pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"student layers {keys} collide once '.' is replaced by '__'")
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

    def _check_schedules(self) -> None:
        # Fails early on a linear/cosine schedule without a length, and on out-of-range values
        # when the run length is known.
        epochs = self.total_epochs or 1
        temps = [self.temperature_schedule.value(e, self.total_epochs) for e in range(epochs)]
        alphas = [self.alpha_schedule.value(e, self.total_epochs) for e in range(epochs)]
        if min(temps) <= 0:
            raise ValueError(f"temperature must stay > 0, reaches {min(temps):g}")
        if min(alphas) < 0 or max(alphas) > 1:
            bad = min(alphas) if min(alphas) < 0 else max(alphas)
            raise ValueError(f"alpha must stay within [0, 1], reaches {bad:g}")

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen teacher (not a submodule), or None."""
        return self._teacher  # type: ignore[no-any-return]

    def set_epoch(self, epoch: int) -> None:
        """Move the temperature and alpha schedules to 0-based ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    @property
    def temperature(self) -> float:
        """The temperature T at the current epoch (dimensionless, > 0)."""
        return self.temperature_schedule.value(self.epoch, self.total_epochs)

    @property
    def alpha(self) -> float:
        """The soft-term weight alpha at the current epoch, in [0, 1]."""
        return self.alpha_schedule.value(self.epoch, self.total_epochs)

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
        student_layers = [s for s, _ in self.feature_pairs]
        teacher_layers = [t for _, t in self.feature_pairs]
        if student_shapes is None:
            if example_input is None:
                raise ValueError("build_adapters needs example_input or student_shapes")
            student_shapes = feature_shapes(
                self.student,
                student_layers,
                _to_device(example_input, _module_device(self.student)),
            )
            if self._student_tap is not None:
                self._student_tap.clear()
        if teacher_shapes is None:
            if self.teacher is None:
                raise ValueError("without a teacher, build_adapters needs teacher_shapes")
            if example_input is None:
                raise ValueError("build_adapters needs example_input or teacher_shapes")
            teacher_shapes = feature_shapes(
                self.teacher,
                teacher_layers,
                _to_device(example_input, _module_device(self.teacher)),
            )
            if self._teacher_tap is not None:
                self._teacher_tap.clear()
        adapters = nn.ModuleDict()
        for s, t in self.feature_pairs:
            if s not in student_shapes:
                raise ValueError(f"no shape given for student layer {s!r}")
            if t not in teacher_shapes:
                raise ValueError(f"no shape given for teacher layer {t!r}")
            try:
                adapters[_adapter_key(s)] = self._adapter(student_shapes[s], teacher_shapes[t])
            except ValueError as err:
                raise ValueError(f"feature pair {s!r} -> {t!r}: {err}") from err
        reference = next(iter([*self.student.parameters(), *self.student.buffers()]), None)
        if reference is not None:
            adapters.to(device=reference.device)
            if reference.is_floating_point():
                adapters.to(dtype=reference.dtype)
        self.adapters = adapters
        return {s: repr(adapters[_adapter_key(s)]) for s, _ in self.feature_pairs}

    def _adapter(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
        if self.feature_loss_kind != "at":
            return build_adapter(student_shape, teacher_shape)
        if len(student_shape) != 3 or len(teacher_shape) != 3:
            raise ValueError(
                f"feature_loss 'at' needs feature maps (C, H, W) on both sides, got student "
                f"{tuple(student_shape)} and teacher {tuple(teacher_shape)}"
            )
        # Attention maps are summed over channels, so only the spatial size has to match: no
        # 1x1 projection (which would let the adapter, not the student, learn the attention).
        c, h, w = (int(d) for d in student_shape)
        return ConvAdapter(c, c, (h, w), (int(teacher_shape[1]), int(teacher_shape[2])))

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
                    features[t] = self.adapters[_adapter_key(s)](feature)
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
                logits = as_logits(_call(teacher, _to_device(inputs, _module_device(teacher))))
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
    ) -> DistillLoss:
        """The objective at the current epoch's temperature and alpha.

        Args:
            student_logits: [N, C].
            labels: [N] integer class indices.
            teacher_logits: [N, C], or None for baseline training (total = cross entropy).
            student_features: adapted student features keyed by teacher layer name (from
                :meth:`forward`).
            teacher_features: teacher features keyed by teacher layer name.
        """
        hard = hard_loss(student_logits, labels)
        zero = hard.new_zeros(())
        if teacher_logits is None:
            return DistillLoss(total=hard, soft=zero, hard=hard, feature=zero, weights=None)
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(
                f"student logits {list(student_logits.shape)} and teacher logits "
                f"{list(teacher_logits.shape)} differ in shape"
            )
        teacher_logits = teacher_logits.to(student_logits.device)
        temperature = self.temperature
        weights = sample_weights(
            self.weighting, student_logits, teacher_logits, labels, temperature
        )
        if self.method == "dkd":
            soft = dkd_loss(
                student_logits,
                teacher_logits,
                labels,
                temperature,
                self.dkd_alpha,
                self.dkd_beta,
                weights,
            )
        else:
            soft = soft_target_loss(student_logits, teacher_logits, temperature, weights)
        feature: Tensor | None = None
        if self.feature_pairs:
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
            feature = torch.stack(terms).mean()
        total = combine(soft, hard, self.alpha, feature, self.feature_weight)
        return DistillLoss(
            total=total,
            soft=soft,
            hard=hard,
            feature=feature if feature is not None else zero,
            weights=weights,
        )

    def _feature_term(self, student: Tensor, teacher: Tensor) -> Tensor:
        if self.feature_loss_kind == "at":
            return attention_loss(student, teacher, self.attention_p)
        if self.feature_loss_kind == "cosine":
            return cosine_feature_loss(student, teacher)
        return feature_loss(student, teacher)

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
