"""Build models from spec strings (``torchvision:``, ``timm:``, ``hf:``, ``module.path:factory``)
and move weights in and out of files safely."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raydistill.config import JobError, ModelSpec
from raydistill.files import atomic_output

WEIGHTS_FORMAT = "raydistill.weights/1"
# Model specs a file raydistill did not write itself may name without being trusted: builders
# that look a model up by name in a registry, and raydistill's own model factories. Anything
# else (``os:system``, ``mypkg.models:net``) imports and calls code the file chose.
ALLOWED_PREFIXES = ("torchvision", "timm", "hf")
ALLOWED_FACTORY_MODULES = ("raydistill.models.zoo",)


def check_spec_allowed(spec: str, trusted: bool = False, source: str = "file") -> None:
    """Refuse (one-line :class:`JobError`) a model spec read from an untrusted ``source`` (a
    received export, a run directory's ``job.yaml``) unless it is on the allow-list:
    ``torchvision:<name>``, ``timm:<name>``, ``hf:<name>`` or a public factory of raydistill's
    own zoo (``raydistill.models.zoo:<factory>``). ``trusted=True`` skips the check: the
    caller vouches for the source, as for a job file the user wrote."""
    if trusted:
        return
    prefix, _, name = spec.partition(":")
    if prefix in ALLOWED_PREFIXES and name:
        return
    if prefix in ALLOWED_FACTORY_MODULES and name.isidentifier() and not name.startswith("_"):
        return
    allowed = ", ".join(f"{p}:" for p in (*ALLOWED_PREFIXES, *ALLOWED_FACTORY_MODULES))
    raise JobError(
        f"{source} names model '{spec}', which is not on the allow-list ({allowed}): building "
        "it would import and call code the file chose; refused. Pass trusted=True only if "
        "you trust where the file came from"
    )


def _torchvision_builder(name: str) -> Callable[..., nn.Module]:
    import torchvision.models as tvm

    try:
        return tvm.get_model_builder(name)
    except ValueError:
        raise JobError(
            f"torchvision has no model '{name}' (see torchvision.models.list_models())"
        ) from None


def _factory(spec: str) -> Callable[..., nn.Module]:
    """Import exactly the ``module.path:factory`` the user named, nothing else."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise JobError(f"model '{spec}': cannot import module '{module_name}' ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise JobError(f"model '{spec}': '{module_name}' has no callable '{attr}'")
    return factory


def resolve_builder(spec: str) -> Callable[..., nn.Module]:
    prefix, _, name = spec.partition(":")
    if prefix == "torchvision":
        return _torchvision_builder(name)
    if prefix == "timm":
        from raydistill.models.timm_models import timm_builder

        return timm_builder(name)
    if prefix == "hf":
        from raydistill.models.hf import build_hf_classifier

        return functools.partial(build_hf_classifier, name)
    return _factory(spec)


def build_model(spec: ModelSpec, num_classes: int | None = None, load: bool = True) -> nn.Module:
    """Build the model a spec names, with ``num_classes`` outputs when the builder accepts it.

    torchvision models are built with ``weights=None`` unless ``args`` says otherwise; pretrained
    weights come from ``checkpoint`` (a local file), never from a download; timm models from
    ``args.pretrained_file`` (see :mod:`raydistill.models.timm_models`). With ``load`` the
    spec's starting weights are loaded (its checkpoint; a builder's own pretrained file, for
    builders with a ``load_pretrained`` parameter); without, the caller loads weights itself
    or needs only the architecture.
    """
    builder = resolve_builder(spec.model)
    kwargs: dict[str, Any] = dict(spec.args)
    params = inspect.signature(builder).parameters
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if num_classes is not None and ("num_classes" in params or takes_kwargs):
        kwargs.setdefault("num_classes", num_classes)
    if spec.model.startswith("torchvision:"):
        kwargs.setdefault("weights", None)
    if "load_pretrained" in params:
        kwargs["load_pretrained"] = load
    try:
        model = builder(**kwargs)
    except TypeError as exc:
        raise JobError(f"model '{spec.model}' with args {spec.args}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise JobError(f"model '{spec.model}' returned {type(model).__name__}, not a torch module")
    if load and spec.checkpoint is not None:
        load_weights(model, spec.checkpoint, what=spec.model)
    return model


def save_weights(model: nn.Module, path: Path, meta: dict[str, Any] | None = None) -> Path:
    """Write a model's weights (tensors and plain metadata only, so loading needs no pickle)."""
    path = Path(path)
    with atomic_output(path) as tmp:  # a killed run never leaves a half-written weights file
        torch.save({"format": WEIGHTS_FORMAT, "meta": meta or {}, "model": model.state_dict()}, tmp)
    return path


def _load_error(exc: Exception) -> str:
    """torch.load's refusal in one line. Its own text spans many lines and suggests
    ``weights_only=False``, which is exactly what must not be done with an untrusted file."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        why = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        return f"it holds more than tensors and plain data ({why}); it is not loaded"
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict from our weights format or a plain ``state_dict`` file, safely."""
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise JobError(f"checkpoint not found: {path}") from None
    except Exception as exc:
        raise JobError(f"checkpoint {path} cannot be read safely: {_load_error(exc)}") from None
    if isinstance(blob, dict) and "model" in blob and isinstance(blob["model"], dict):
        blob = blob["model"]
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise JobError(f"checkpoint {path} holds no state dict of tensors")
    return blob


def load_weights(model: nn.Module, path: Path, what: str = "model") -> nn.Module:
    """Load weights into ``model``; a checkpoint of another model is refused with the reason."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys (e.g. {unexpected[:3]})")
        if mismatched:
            parts.append(f"shape mismatch: {mismatched[:3]}")
        raise JobError(f"checkpoint {path} does not fit {what}: " + "; ".join(parts))
    model.load_state_dict(state)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
