"""Cross-modal: an image teacher guides a text student over paired rows.

Rows are classification rows whose ``text`` becomes the student's tokens and whose image
becomes ``teacher_input``; the objective is
:class:`~raydistill.distill.cross_modal.CrossModalDistiller`'s, which maps the teacher's
embedding into the student's space (``distill.modal_mapping``) before aligning them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from raydistill.distill.cross_modal import CrossModalDistiller
from raydistill.distill.distiller import Distiller
from raydistill.models.specs import build_model
from raydistill.tasks.classification import ClassificationTask

if TYPE_CHECKING:
    from raydistill.train.spec import StageSpec


class CrossModalTask(ClassificationTask):
    """Classification rows with an image for the teacher and a text for the student."""

    name: ClassVar[str] = "cross_modal"

    def build_core(self, spec: StageSpec) -> Distiller:
        if not spec.feature_pairs:  # the teacher stage and the baseline: plain classification
            return super().build_core(spec)
        distiller = CrossModalDistiller.from_config(
            spec.job.distill,
            build_model(spec.model, spec.num_classes),
            self._worker_teacher(spec),
            total_epochs=spec.train.epochs,
            feature_layers=spec.feature_pairs,
        )
        distiller.build_adapters(
            student_shapes=spec.student_shapes, teacher_shapes=spec.teacher_shapes
        )
        return distiller
