"""The teacher actor pool: a Ray Data stage that adds teacher outputs to each row.

Teacher and student see the same input because the teacher's outputs are written into the same
row the student later reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from raydistill.columns import FEATURE_PREFIX as FEATURE_PREFIX  # re-exported
from raydistill.columns import INPUT, TEACHER_INPUT, feature_column
from raydistill.columns import TEACHER_LOGITS as TEACHER_LOGITS  # re-exported
from raydistill.config import JobConfig, ModelSpec, TeacherPoolConfig
from raydistill.data.arrays import model_tensor
from raydistill.distill.taps import FeatureTap
from raydistill.models.specs import build_model, load_weights
from raydistill.precision import autocast
from raydistill.teacher.codec import LogitCodec

if TYPE_CHECKING:
    import ray.data


class TeacherPredictor:
    """One teacher actor: builds the teacher once, then maps numpy batches.

    Adds the teacher logits encoded by ``codec`` (default: ``teacher_logits`` float32 [N, C])
    and, per tapped layer, ``teacher_feat.<layer>``
    float32 [N, *feature_shape].
    """

    def __init__(
        self,
        spec: ModelSpec,
        weights: str,
        num_classes: int,
        feature_layers: list[str],
        use_gpu: bool = False,
        codec: LogitCodec | None = None,
        feature_dtype: str = "float32",
        precision: str = "fp32",
    ) -> None:
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.precision = precision
        model = build_model(spec, num_classes, load=False)
        load_weights(model, Path(weights), what=f"teacher {spec.model}")
        self.model = model.eval().to(self.device)
        self.tap = FeatureTap(self.model, feature_layers) if feature_layers else None
        self.codec = codec or LogitCodec()
        self.feature_dtype = np.dtype(feature_dtype)

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # A teacher that reads something other than the student (its own tokens, or the image
        # of a cross-modal row) finds it in teacher_input.
        inputs = model_tensor(batch.get(TEACHER_INPUT, batch[INPUT])).to(self.device)
        with autocast(self.precision, self.device):
            logits = self.model(inputs)
        if getattr(self.codec, "encodes_tensors", False):
            encoded = self.codec.encode(logits)  # on the device: only its columns come back
        else:
            encoded = self.codec.encode(logits.float().cpu().numpy())
        batch.update(encoded)
        if self.tap is not None:
            for layer, value in self.tap.features.items():
                batch[feature_column(layer)] = value.cpu().numpy().astype(self.feature_dtype)
            self.tap.clear()
        return batch


def attach_teacher(
    ds: ray.data.Dataset,
    job: JobConfig,
    weights: Path,
    num_classes: int,
    codec: LogitCodec | None = None,
) -> ray.data.Dataset:
    """Run the teacher pool over ``ds`` as the job's scaling section sizes it."""
    import ray.data

    from raydistill.runtime import pool_max_actors

    pool: TeacherPoolConfig = job.scaling.teacher_pool
    extra = {"resources": pool.resources} if pool.resources else {}
    return ds.map_batches(
        TeacherPredictor,
        fn_constructor_kwargs={
            "spec": job.teacher,
            "weights": str(weights),
            "num_classes": num_classes,
            "feature_layers": job.pool_feature_layers,
            "feature_dtype": job.distill.feature_dtype,
            "use_gpu": pool.num_gpus > 0,
            "codec": codec,
            "precision": job.train.precision,
        },
        compute=ray.data.ActorPoolStrategy(
            min_size=pool.min_actors, max_size=pool_max_actors(pool)
        ),
        batch_size=pool.batch_size,
        batch_format="numpy",
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
        **extra,
    )
