"""Cross-modal distillation: a teacher of one modality (images) guides a student of another
(text) through a learned modal mapping, trained jointly with the student.

The mapping goes from the teacher's embedding width to the student's, the opposite direction of
:class:`~raydistill.distill.distiller.Distiller`'s adapters: the student keeps its own space and
the teacher's knowledge is projected into it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from raydistill.distill.distiller import Distiller, DistillLoss
from raydistill.distill.losses import scale_grad
from raydistill.distill.model_io import Inputs, adapter_key, as_logits
from raydistill.distill.settings import keywords_from_settings
from raydistill.distill.taps import _call, feature_shapes

if TYPE_CHECKING:
    from raydistill.config.distill import DistillConfig

ModalMappingKind = Literal["linear", "mlp"]


def _centred(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    # Centred over the batch: a jointly trained mapping could otherwise send every teacher
    # embedding to one direction and the student would follow, aligning perfectly while its
    # embeddings collapse. Only per-sample variation is aligned.
    s, t = student.float().flatten(1), teacher.float().flatten(1)
    if len(s) > 1:
        s, t = s - s.mean(0, keepdim=True), t - t.mean(0, keepdim=True)
    return s, t


def centred_cosine(student: Tensor, teacher: Tensor) -> Tensor:
    """``1 - cos`` between batch-centred embeddings [N, D], averaged over the batch. Unlike
    the Distiller's feature losses the teacher side is not detached: it is the output of the
    trainable modal mapping (the teacher itself stays frozen, under no_grad)."""
    s, t = _centred(student, teacher)
    return (1 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)).mean()


def centred_mse(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error between batch-centred embeddings [N, D] (teacher side not
    detached, as in :func:`centred_cosine`)."""
    s, t = _centred(student, teacher)
    return F.mse_loss(s, t)


ALIGNMENT_TERMS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "mse": centred_mse,
    "cosine": centred_cosine,
}
"""``distill.feature_loss`` of a cross-modal job -> how the student embedding and the mapped
teacher embedding are aligned (the job schema allows exactly these)."""


class ModalMapping(nn.Module):
    """Teacher embedding -> student width: [N, *teacher_shape] -> [N, D_s].

    Feature maps [N, C, H, W] are averaged over space and token sequences [N, L, D] over tokens
    first; then ``net`` (a linear map, an MLP, or the module a user passes) maps the width.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, teacher: Tensor) -> Tensor:
        """[N, D_t], [N, L, D_t] or [N, C, H, W] -> [N, D_s]."""
        if teacher.dim() == 4:
            teacher = teacher.mean(dim=(2, 3))
        elif teacher.dim() == 3:
            teacher = teacher.mean(dim=1)
        return self.net(teacher.flatten(1).float())


def build_modal_mapping(
    kind: ModalMappingKind, teacher_shape: Sequence[int], student_shape: Sequence[int]
) -> ModalMapping:
    """A ``linear`` or ``mlp`` (Linear, GELU, Linear; hidden width max(D_t, D_s)) mapping from a
    teacher feature of ``teacher_shape`` to a student embedding of ``student_shape`` (D_s,)."""
    t = tuple(int(d) for d in teacher_shape)
    s = tuple(int(d) for d in student_shape)
    if len(s) != 1:
        raise ValueError(
            f"the student side of a cross-modal pair must be an embedding (D,), got {s}: tap a "
            "pooled layer (for hf: text models, 'pooled')"
        )
    width = t[0] if len(t) in (1, 3) else t[-1] if len(t) == 2 else math.prod(t)
    if kind == "linear":
        return ModalMapping(nn.Linear(width, s[0]))
    if kind == "mlp":
        hidden = max(width, s[0])
        net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, s[0]))
        return ModalMapping(net)
    raise ValueError(f"unknown modal mapping {kind!r}; expected linear or mlp")


class CrossModalDistiller(Distiller):
    """A student of one modality distilled from a teacher of another.

    ``total = alpha * soft + (1 - alpha) * hard + feature_weight * align``, where ``align``
    compares each student embedding with ``modal_mapping(teacher feature)`` by ``feature_loss``
    (``cosine`` by default, or ``mse``), both centred over the batch (so a collapsed, constant
    embedding earns nothing), and ``soft`` is KD over the shared label space (set
    ``alpha=0`` when teacher and student do not share labels). Teacher and student take
    different inputs: :meth:`step` takes both. ``feature_grad_scale`` scales the alignment's
    gradient into the student (the mapping gets the full gradient).

    Args:
        teacher: the frozen teacher (e.g. an image classifier), or None when its outputs come
            from elsewhere (the teacher pool).
        student: the model trained (e.g. a text classifier).
        modal_mapping: the trainable map from the teacher's width to the student's, e.g.
            ``nn.Linear(512, 768)`` (wrapped in :class:`ModalMapping`, so maps and sequences
            are pooled first); or ``"linear"``/``"mlp"`` to size one per pair from the shapes
            in :meth:`build_adapters`.
        feature_layers: (student embedding, teacher feature) pairs, e.g.
            ``{"pooled": "avgpool"}``.
        Other arguments as in :class:`Distiller`.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        student: nn.Module,
        modal_mapping: nn.Module | ModalMappingKind = "linear",
        *,
        feature_layers: Sequence[str] | Mapping[str, str] | Sequence[tuple[str, str]],
        feature_weight: float = 1.0,
        feature_loss: Literal["mse", "cosine"] = "cosine",
        alpha: float | Any = 0.5,
        **kwargs: Any,
    ) -> None:
        if feature_loss not in ALIGNMENT_TERMS:
            kinds = " or ".join(ALIGNMENT_TERMS)
            raise ValueError(f"cross-modal alignment is {kinds}, not {feature_loss!r}")
        super().__init__(
            student,
            teacher,
            feature_layers=feature_layers,
            feature_weight=feature_weight,
            feature_loss=feature_loss,
            alpha=alpha,
            **kwargs,
        )
        if not self.feature_pairs:
            raise ValueError("cross-modal distillation aligns features: name feature_layers")
        self.mapping_kind: ModalMappingKind | None = None
        if isinstance(modal_mapping, nn.Module):
            if len(self.feature_pairs) != 1:
                raise ValueError(
                    "one modal_mapping module serves one feature pair; pass 'linear' or 'mlp'"
                )
            student_layer = self.feature_pairs[0][0]
            self.adapters = nn.ModuleDict({adapter_key(student_layer): ModalMapping(modal_mapping)})
        else:
            self.mapping_kind = modal_mapping

    @classmethod
    def from_config(  # type: ignore[override]
        cls,
        distill: DistillConfig,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        total_epochs: int,
        feature_layers: list[tuple[str, str]] | None = None,
    ) -> CrossModalDistiller:
        """The cross-modal Distiller of a job's ``distill`` section, with the modal mapping
        ``distill.modal_mapping`` (null: ``linear``), sized in :meth:`build_adapters`.

        Arguments as in :meth:`Distiller.from_config`; ``feature_layers`` must name at least
        one (student embedding, teacher feature) pair.
        """
        return cls(
            teacher,
            student,
            distill.modal_mapping or "linear",
            feature_layers=feature_layers or [],
            total_epochs=total_epochs,
            **keywords_from_settings(distill),
        )

    def _adapter(self, student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
        if self.mapping_kind is None:
            raise ValueError("this distiller's modal_mapping was given as a module")
        return build_modal_mapping(self.mapping_kind, teacher_shape, student_shape)

    def build_adapters(self, example_input: Inputs | None = None, **shapes: Any) -> dict[str, str]:
        """Size a modal mapping per pair (only when ``modal_mapping`` was a kind): from
        ``student_shapes``/``teacher_shapes``, or a dry forward of ``example_input`` (a
        ``(student_input, teacher_input)`` pair here, as the modalities differ)."""
        if self.mapping_kind is None:
            return {s: repr(self.adapters[adapter_key(s)]) for s, _ in self.feature_pairs}
        if example_input is not None:
            student_input, teacher_input = example_input  # type: ignore[misc]
            shapes.setdefault(
                "student_shapes",
                feature_shapes(self.student, [s for s, _ in self.feature_pairs], student_input),
            )
            if self.teacher is not None:
                shapes.setdefault(
                    "teacher_shapes",
                    feature_shapes(self.teacher, [t for _, t in self.feature_pairs], teacher_input),
                )
        return super().build_adapters(None, **shapes)

    def forward(self, inputs: Inputs) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's logits [N, C] and its raw embeddings keyed by TEACHER layer name
        ([N, D_s] each, their gradient from the alignment scaled by ``feature_grad_scale``);
        the mapping runs on the teacher side, in :meth:`loss`."""
        tap = self._student_tap
        assert tap is not None
        if len(self.adapters) != len(self.feature_pairs):
            raise RuntimeError("the modal mappings are not built: call build_adapters first")
        tap.clear()
        logits = as_logits(_call(self.student, inputs))
        try:
            scale = self.feature_grad_scale
            features = {t: scale_grad(tap.features[s], scale) for s, t in self.feature_pairs}
        except KeyError as exc:
            raise ValueError(f"student layer {exc.args[0]!r} produced no output") from None
        finally:
            tap.clear()
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
        """As :meth:`Distiller.loss`, with the teacher's features first mapped into the
        student's space (the mapping's gradient trains it jointly with the student)."""
        if teacher_features is not None and self.feature_weight != 0:
            teacher_features = {
                t: self.adapters[adapter_key(s)](teacher_features[t].to(student_logits.device))
                for s, t in self.feature_pairs
                if t in teacher_features
            }
        return super().loss(
            student_logits, labels, teacher_logits, student_features, teacher_features, labelled
        )

    def _feature_term(self, student: Tensor, teacher: Tensor) -> Tensor:
        return ALIGNMENT_TERMS[self.settings.feature_loss](student, teacher)

    def step(  # type: ignore[override]
        self, inputs: Inputs, labels: Tensor, teacher_inputs: Inputs | None = None
    ) -> DistillLoss:
        """Teacher outputs on ``teacher_inputs`` (e.g. the images), the student on ``inputs``
        (e.g. the texts' token rows), and the loss."""
        teacher_logits = teacher_features = None
        if self.teacher is not None:
            if teacher_inputs is None:
                raise ValueError("a cross-modal step needs teacher_inputs for the teacher")
            teacher_logits, teacher_features = self.teacher_outputs(teacher_inputs)
        logits, student_features = self(inputs)
        return self.loss(logits, labels, teacher_logits, student_features, teacher_features)
