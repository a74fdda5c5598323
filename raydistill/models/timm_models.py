"""timm image models as raydistill models (``timm:<name>``, e.g. ``timm:resnet10t``).

A timm model is built with ``timm.create_model(name, pretrained=False, num_classes=..., **args)``
and is a plain ``nn.Module``: images [N, C, H, W] in, logits [N, num_classes] out, and feature
taps name its submodules as ``model.named_modules()`` does (``layer4`` of a ResNet,
``blocks.3`` of a ViT). Nothing is downloaded: pretrained weights come from a local file
(``args.pretrained_file``), which timm fits to the model (a new classifier head for another
``num_classes``, the first convolution summed or repeated for another ``in_chans``, a ViT's
position embeddings resized for another ``img_size``).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from raydistill.config import JobError

# create_model arguments that choose where weights come from: raydistill reads weights only
# from args.pretrained_file (a local file, read tensors-only) and the spec's checkpoint.
_WEIGHT_SOURCE_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")


def _require_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise JobError(
            "timm: models need timm: pip install 'raydistill[timm]' (or timm>=1.0)"
        ) from None
    return timm


def check_timm_name(name: str) -> None:
    """Refuse (one-line :class:`JobError`) a name timm cannot build offline: a hub name
    (``hf-hub:...``), an unknown architecture (the message lists close matches) or an unknown
    pretrained tag (``resnet18.<tag>``)."""
    timm = _require_timm()
    if ":" in name:
        raise JobError(
            f"timm:{name}: timm names that load from a hub or directory are not built here "
            "(nothing downloads at run time); name the architecture (e.g. timm:resnet18) and give "
            "a local weights file as args.pretrained_file"
        )
    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise JobError(f"timm has no model '{base}'{hint} (see timm.list_models())")
    if tag and name not in timm.list_pretrained(f"{base}.*"):
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{base}.*")]
        known = ", ".join(tags) or "none"
        raise JobError(f"timm:{name}: '{base}' has no pretrained tag '{tag}' (has: {known})")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_pretrained(path: Path, what: str) -> dict[str, Any]:
    """A state dict from a local timm weights file (.safetensors, or a torch file read with
    ``weights_only=True``; ``state_dict``/``model`` wrappers and ``module.`` prefixes removed)."""
    from timm.models import load_state_dict

    from raydistill.models.hf import local_path
    from raydistill.models.specs import _load_error

    path = local_path(str(path))
    if not path.is_file():
        raise JobError(f"{what}: pretrained_file not found: {path}")
    try:
        return load_state_dict(str(path), weights_only=True)
    except Exception as exc:
        raise JobError(
            f"{what}: pretrained_file {path} cannot be read safely: {_load_error(exc)}"
        ) from None


def build_timm_model(
    name: str,
    *,
    num_classes: int | None = None,
    pretrained: bool = False,
    pretrained_file: str | Path | None = None,
    load_pretrained: bool = True,
    **args: Any,
) -> nn.Module:
    """``timm.create_model(name, num_classes=num_classes, **args)`` with weights from nowhere but
    ``pretrained_file``.

    ``pretrained_file`` (implies ``pretrained``) is a local copy of timm's pretrained weights
    (``model.safetensors`` or a ``.pth``/``.bin``); ``pretrained: true`` without it would be a
    download and is refused. ``load_pretrained=False`` (``build_model(load=False)``: the caller
    loads trained weights over it, or needs only the architecture) skips reading the file.
    """
    timm = _require_timm()
    what = f"timm:{name}"
    chosen = [key for key in _WEIGHT_SOURCE_ARGS if key in args]
    if chosen:
        raise JobError(
            f"{what}: args {', '.join(chosen)} are not used here (weights are read from local "
            "files only): give pretrained weights as args.pretrained_file, trained ones as "
            "checkpoint"
        )
    if pretrained and pretrained_file is None:
        raise JobError(
            f"{what}: pretrained: true would download weights, and nothing downloads at run time: "
            "give a local copy of them as args.pretrained_file (e.g. the hub's model.safetensors)"
        )
    kwargs: dict[str, Any] = dict(args)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained_file is not None and load_pretrained:
        # An in-memory state dict is the first source timm's loader tries (before any hub or
        # URL), and it still fits the head, input channels and position embeddings to the model.
        kwargs["pretrained_cfg_overlay"] = {"state_dict": _read_pretrained(pretrained_file, what)}
        kwargs["pretrained"] = True
    else:
        kwargs["pretrained"] = False
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as exc:
        raise JobError(f"{what} with args {args}: {_first_line(exc)}") from None
    except (RuntimeError, ValueError, AssertionError) as exc:
        where = f" and pretrained_file {pretrained_file}" if kwargs["pretrained"] else ""
        raise JobError(f"{what} with args {args}{where}: {_first_line(exc)}") from None


def timm_builder(name: str) -> Callable[..., nn.Module]:
    """The builder of ``timm:<name>`` (the name checked first, so an unknown one fails early)."""
    check_timm_name(name)
    return functools.partial(build_timm_model, name)
