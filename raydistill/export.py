"""``raydistill export``: a run's trained student (or teacher, or baseline) in a deployable format.

Formats:

* ``torchscript``: ``torch.jit.trace`` of the model, loadable with ``torch.jit.load`` without
  raydistill or the model's code.
* ``onnx``: ONNX with a dynamic batch dimension (input ``input`` [N, ...], output ``logits``
  [N, C]), runnable with onnxruntime. Written by PyTorch's TorchScript-based exporter
  (``dynamo=False``): the newer exporter needs ``onnxscript``, which is not a dependency.
* ``safetensors``: the weights (no code, no pickle) with the model spec, its args and the class
  count in the file's metadata, so :func:`load_safetensors` rebuilds the model from it alone.
* ``hf``: ``save_pretrained`` of a Hugging Face ``transformers`` model (an ``hf:`` spec) with
  its tokenizer, loadable by plain ``AutoModelForSequenceClassification.from_pretrained``
  (``AutoModelForCausalLM`` for ``task: causal_lm``);
  refused for others.

Every export is loaded back and run on a few test inputs; the largest absolute difference from
the PyTorch model's logits is returned (and printed by the CLI).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from raydistill.config import JobError, ModelSpec
from raydistill.data.arrays import model_tensor
from raydistill.files import atomic_output
from raydistill.models.hf import HFTextClassifier
from raydistill.models.hf_causal import HFCausalLM
from raydistill.models.specs import build_model, check_spec_allowed, load_weights
from raydistill.results import read_run_job
from raydistill.rundir import EXPORT_DIR, JOB_FILE, teacher_weights_path, weights_file
from raydistill.tasks import get_task

ExportFormat = Literal["torchscript", "onnx", "safetensors", "hf"]
FORMATS: tuple[str, ...] = get_args(ExportFormat)
_SUFFIX = {"torchscript": ".torchscript.pt", "onnx": ".onnx", "safetensors": ".safetensors"}
_META_MODEL, _META_ARGS, _META_CLASSES = "raydistill.model", "raydistill.args", "num_classes"
CHECK_ROWS = 8  # test inputs the export is checked on (more than the traced batch of 2)


@dataclass(frozen=True)
class ExportResult:
    """One written export and how closely it reproduces the PyTorch model."""

    path: Path
    format: str
    stage: str
    size_bytes: int
    max_abs_diff: float  # largest |export logits - PyTorch logits| over CHECK_ROWS test inputs


def _run_model(
    run_dir: Path, stage: str, trusted: bool = True
) -> tuple[nn.Module, ModelSpec, int, Any, Any]:
    """The stage's trained model (eval mode), its spec, class count, a few test inputs as the
    model reads them, and the run's job. Unless ``trusted``, the run's ``job.yaml`` may name
    allow-listed models only."""
    job = read_run_job(run_dir, "export")
    for role in ("teacher", "student"):
        check_spec_allowed(getattr(job, role).model, trusted, f"{run_dir / JOB_FILE} ({role})")
    if stage == "teacher":
        spec: ModelSpec = job.teacher
        weights = teacher_weights_path(job, run_dir)
    elif stage in ("student", "baseline"):
        spec, weights = job.student, weights_file(run_dir, stage)
    else:
        raise JobError(f"unknown stage '{stage}' (one of teacher, student, baseline)")
    if not weights.is_file():
        raise JobError(f"{run_dir}: the {stage} has no trained weights ({weights} is missing)")
    task = get_task(job)
    splits = task.read_splits(job, lambda _: None)
    num_classes = task.num_classes(splits)
    model = load_weights(build_model(spec, num_classes, load=False), weights, f"the {stage}")
    inputs = task.example_inputs(job, spec, splits["test"], CHECK_ROWS)
    return model.eval(), spec, num_classes, inputs, job


def write_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Trace ``model`` on ``example`` [N, ...] and save it."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python control flow
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """ONNX with input ``input`` [N, ...] and output ``logits`` [N, C], batch dim dynamic."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice for dynamo=False
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )


def write_safetensors(model: nn.Module, spec: ModelSpec, num_classes: int, path: Path) -> None:
    """The weights, with what :func:`load_safetensors` needs to rebuild the model."""
    from safetensors.torch import save_model

    metadata = {
        _META_MODEL: spec.model,
        _META_ARGS: json.dumps(spec.args),
        _META_CLASSES: str(num_classes),
    }
    save_model(model, str(path), metadata=metadata)


def load_safetensors(path: Path | str, trusted: bool = False) -> nn.Module:
    """Rebuild the model a ``safetensors`` export names (spec, args, classes) and load its
    weights; returns it in eval mode.

    The file's metadata names the model builder, so a received file could name any
    ``module:callable`` (``os:system``): only allow-listed specs are built (see
    :func:`~raydistill.models.specs.check_spec_allowed`) unless ``trusted`` says the file
    comes from a source you trust (a user model factory of your own)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise JobError(f"{path}: not a readable safetensors file ({exc})") from None
    if _META_MODEL not in meta:
        raise JobError(f"{path}: no raydistill metadata (not written by raydistill export)")
    check_spec_allowed(meta[_META_MODEL], trusted, f"{path}'s metadata")
    try:
        args = json.loads(meta.get(_META_ARGS, "{}"))
        classes = int(meta[_META_CLASSES])
    except (ValueError, KeyError) as exc:
        raise JobError(f"{path}: damaged raydistill metadata ({exc})") from None
    if not isinstance(args, dict):
        raise JobError(f"{path}: damaged raydistill metadata (args are not a mapping)")
    try:
        spec = ModelSpec(model=meta[_META_MODEL], args=args)
    except ValidationError as exc:
        raise JobError(f"{path}: damaged raydistill metadata ({exc.errors()[0]['msg']})") from None
    model = build_model(spec, classes, load=False)
    load_model(model, str(path))
    return model.eval()


def _hf_save(model: nn.Module, spec: ModelSpec, path: Path) -> None:
    if not hasattr(model, "save_pretrained"):
        raise JobError(
            f"--format hf writes Hugging Face transformers models (save_pretrained); this "
            f"student, '{spec.model}', is a {type(model).__name__}: use torchscript, onnx or "
            "safetensors"
        )
    if isinstance(model, HFTextClassifier):
        model.save_pretrained(path, tokenizer_source=spec.text_tokenizer)
    else:
        model.save_pretrained(str(path))


@torch.no_grad()
def _max_diff(fmt: str, path: Path, model: nn.Module, inputs: Any, job: Any) -> float:
    """Load the export back with its own runtime and compare outputs with the PyTorch model."""
    if fmt == "safetensors":
        # the spec came from this run's own job (trusted input), not from a received file
        loaded = load_safetensors(path, trusted=True)
        return get_task(job).output_difference(model, loaded, inputs)
    x = model_tensor(inputs)
    expected = model(x).numpy()
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates jit.load
            got = torch.jit.load(str(path)).eval()(x).numpy()
    elif fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})[0]
    elif isinstance(model, HFCausalLM):
        from transformers import AutoModelForCausalLM

        plain = AutoModelForCausalLM.from_pretrained(str(path)).eval()
        got = plain(input_ids=x[:, 0], attention_mask=x[:, 1]).logits[..., : model.vocab].numpy()
    elif isinstance(model, HFTextClassifier):
        from transformers import AutoModelForSequenceClassification

        plain = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
        got = plain(input_ids=x[:, 0], attention_mask=x[:, 1]).logits.numpy()
    else:
        return float("nan")  # transformers' own loading is the check
    return float(np.abs(got - expected).max())


def export_run(
    run_dir: Path | str,
    format: ExportFormat,
    stage: str = "student",
    output: Path | str | None = None,
    trusted: bool = True,
) -> ExportResult:
    """``raydistill export``: write the run's ``stage`` model in ``format`` (default location:
    ``<run dir>/export/<stage>.<ext>``), load it back and measure the largest logit difference.

    A run directory's ``job.yaml`` names model code, like the job file it came from (trusted
    input); ``trusted=False`` builds only allow-listed models from it (see
    :func:`~raydistill.models.specs.check_spec_allowed`), for a run directory received from
    elsewhere."""
    if format not in FORMATS:
        raise JobError(f"unknown export format '{format}' (one of {', '.join(FORMATS)})")
    run_dir = Path(run_dir).resolve()
    model, spec, num_classes, inputs, job = _run_model(run_dir, stage, trusted)
    task = get_task(job)
    if format not in task.export_formats:
        raise JobError(
            f"task {task.name} exports as {', '.join(task.export_formats)}, not {format}"
        )
    suffix = _SUFFIX.get(format, "-hf")
    path = Path(output) if output is not None else run_dir / EXPORT_DIR / f"{stage}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "hf":
        _hf_save(model, spec, path)  # a directory of files, written by transformers
    else:
        # a temporary file renamed onto the export: a kill never leaves half of one
        with atomic_output(path) as tmp:
            if format == "torchscript":
                write_torchscript(model, model_tensor(inputs[:2]), tmp)
            elif format == "onnx":
                write_onnx(model, model_tensor(inputs[:2]), tmp)
            else:
                write_safetensors(model, spec, num_classes, tmp)
    size = (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )
    return ExportResult(path, format, stage, size, _max_diff(format, path, model, inputs, job))
