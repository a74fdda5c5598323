"""Recording intermediate activations of a model by submodule name."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def _first_tensor(output: Any, layer: str) -> Tensor:
    """The tensor a module's output stands for: itself, element 0 of a tuple/list, or the
    ``last_hidden_state`` (else the first value) of a mapping."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output:
        return _first_tensor(output[0], layer)
    if isinstance(output, Mapping) and output:
        key = "last_hidden_state" if "last_hidden_state" in output else next(iter(output))
        return _first_tensor(output[key], layer)
    raise TypeError(f"layer {layer!r} returned {type(output).__name__}, not a tensor")


def _call(model: nn.Module, inputs: Tensor | Mapping[str, Any]) -> Any:
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


class _Recorder:
    """The forward hook of one tapped layer.

    A small class rather than a closure so that a model carrying the hook can still be pickled
    (Ray ships models between processes) and deep-copied (the copy records into the copied tap).
    """

    def __init__(self, tap: FeatureTap, name: str) -> None:
        self.tap = tap
        self.name = name

    def __call__(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        self.tap.features[self.name] = _first_tensor(output, self.name)


class FeatureTap:
    """Forward hooks that record the outputs of named submodules (dotted names, as in
    ``model.named_modules()``).

    After each forward, ``features[name]`` holds the latest output [N, ...] of each tapped layer
    (element 0 when the layer returns a tuple/list). The tensors are not detached: the graph is
    kept when the forward runs with gradients.
    """

    def __init__(self, model: nn.Module, layer_names: Sequence[str]) -> None:
        if isinstance(layer_names, str):
            raise TypeError("layer_names must be a sequence of names, not a single string")
        modules = dict(model.named_modules())
        self.layer_names: list[str] = list(dict.fromkeys(layer_names))
        for name in self.layer_names:
            if name not in modules:
                raise KeyError(_unknown_layer_message(name, modules))
        self.features: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = [
            modules[name].register_forward_hook(_Recorder(self, name)) for name in self.layer_names
        ]

    def clear(self) -> None:
        """Drop the recorded features (frees the activations they hold)."""
        self.features.clear()

    def remove(self) -> None:
        """Remove the hooks; the model no longer records anything. Idempotent."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()


def _unknown_layer_message(name: str, modules: Mapping[str, nn.Module]) -> str:
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    return f"no submodule named {name!r}{hint} Available: {shown or '(none)'}"


def feature_shapes(
    model: nn.Module,
    layer_names: Sequence[str],
    example_input: Tensor | Mapping[str, Any],
) -> dict[str, tuple[int, ...]]:
    """The output shape of each named layer, without the batch dimension.

    Runs one forward of ``example_input`` ([N, ...] tensor, or a mapping passed as keyword
    arguments) under ``torch.no_grad`` in eval mode, then restores every submodule's training
    flag.
    """
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with FeatureTap(model, layer_names) as tap, torch.no_grad():
            _call(model, example_input)
            missing = [name for name in tap.layer_names if name not in tap.features]
            if missing:
                raise ValueError(f"layers {missing} produced no output in the forward pass")
            return {name: tuple(tap.features[name].shape[1:]) for name in tap.layer_names}
    finally:
        for module, training in flags.items():
            module.training = training
