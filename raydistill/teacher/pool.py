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
from raydistill.columns import INPUT, ROW_ID, TEACHER_INPUT, feature_column
from raydistill.columns import TEACHER_LOGITS as TEACHER_LOGITS  # re-exported
from raydistill.config import JobConfig, ModelSpec, TeacherPoolConfig
from raydistill.config.lm import GenerateConfig
from raydistill.data.arrays import model_tensor
from raydistill.data.lm_text import prompt_response_rows, row_prompt
from raydistill.distill.taps import FeatureTap
from raydistill.models.specs import build_model, load_weights
from raydistill.precision import autocast
from raydistill.teacher.codec import LogitCodec

if TYPE_CHECKING:
    import ray.data


def _teacher_on_device(
    spec: ModelSpec, weights: str, num_classes: int, use_gpu: bool
) -> tuple[torch.device, torch.nn.Module]:
    """The trained teacher in eval mode on the actor's GPU when it was given one, else CPU."""
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    model = build_model(spec, num_classes, load=False)
    load_weights(model, Path(weights), what=f"teacher {spec.model}")
    return device, model.eval().to(device)


def _encoded(codec: LogitCodec, logits: torch.Tensor) -> dict[str, np.ndarray]:
    """``logits`` [N, ...] as ``codec``'s columns: a codec that encodes tensors does it on the
    device (only its columns come back), the others read float32 numpy."""
    if getattr(codec, "encodes_tensors", False):
        return codec.encode(logits)
    return codec.encode(logits.float().cpu().numpy())


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
        self.device, self.model = _teacher_on_device(spec, weights, num_classes, use_gpu)
        self.precision = precision
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
        batch.update(_encoded(self.codec, logits))
        if self.tap is not None:
            for layer, value in self.tap.features.items():
                batch[feature_column(layer)] = value.cpu().numpy().astype(self.feature_dtype)
            self.tap.clear()
        return batch


PROMPT_ROW = "prompt_row_id"  # a generated row's source: the row_id of the prompt it answers


class TeacherGenerator:
    """One generator actor (``distill.teacher_pass: generate``): builds the teacher once, then
    answers every row's prompt with it, ``samples_per_prompt`` times.

    A batch of prompt/response rows (``input`` int64 [N, 3, L], ``row_id`` [N]) becomes
    N * samples_per_prompt new rows: ``input`` int64 [N * S, 3, L] built by
    :func:`~raydistill.data.lm_text.prompt_response_rows` from the prompt (the tokens before
    the row's first target) and the teacher's answer (targets on the answer and its closing
    end-of-sequence token only), ``row_id`` = source row_id * S + sample index and
    ``prompt_row_id`` = the source's row_id. Each answer's draws come from a generator seeded
    by (``seed``, source row_id, sample index): the same rows on a rerun, on any actor. With a
    ``codec`` the same teacher then scores the new rows in one forward and the batch carries
    their per-token outputs encoded by it, as :class:`TeacherPredictor` ships them.
    """

    def __init__(
        self,
        spec: ModelSpec,
        weights: str,
        num_classes: int,
        generate: GenerateConfig,
        seq_len: int,
        eos_id: int,
        pad_id: int,
        seed: int = 0,
        use_gpu: bool = False,
        codec: LogitCodec | None = None,
        precision: str = "fp32",
    ) -> None:
        self.device, self.model = _teacher_on_device(spec, weights, num_classes, use_gpu)
        self.precision = precision
        self.settings, self.codec = generate, codec
        self.seq_len, self.eos_id, self.pad_id, self.seed = seq_len, eos_id, pad_id, seed

    def answer(self, prompt: np.ndarray, row_id: int, sample: int) -> list[int]:
        """The teacher's answer ids to ``prompt`` int64 [P], its end-of-sequence token dropped
        (the row builder closes every answer with one), at most the row's room for it."""
        g = self.settings
        room = min(g.max_new_tokens, self.seq_len - len(prompt) - 1)
        if room < 1 or len(prompt) == 0:
            return []
        state = np.random.SeedSequence([self.seed, row_id, sample]).generate_state(2)
        draws = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        with autocast(self.precision, self.device):
            new = self.model.sample(
                torch.from_numpy(prompt), room, self.eos_id, g.temperature, g.top_p, draws
            ).tolist()
        return new[:-1] if new and new[-1] == self.eos_id else new

    @torch.inference_mode()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        samples = self.settings.samples_per_prompt
        pairs, row_ids, sources = [], [], []
        for row, row_id in zip(np.asarray(batch[INPUT]), batch[ROW_ID], strict=True):
            prompt = row_prompt(row, prompt_response=True)
            for j in range(samples):
                pairs.append((prompt.tolist(), self.answer(prompt, int(row_id), j)))
                row_ids.append(int(row_id) * samples + j)
                sources.append(int(row_id))
        rows = prompt_response_rows(pairs, self.seq_len, self.eos_id, self.pad_id).rows
        out = {
            INPUT: rows,
            ROW_ID: np.asarray(row_ids, dtype=np.int64),
            PROMPT_ROW: np.asarray(sources, dtype=np.int64),
        }
        if self.codec is not None and len(rows):
            with autocast(self.precision, self.device):
                logits = self.model(torch.from_numpy(rows).to(self.device))
            out.update(_encoded(self.codec, logits))
        return out


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
