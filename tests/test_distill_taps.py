"""Recording intermediate features by layer name."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from raydistill.distill import FeatureTap, feature_shapes


class _PairOut(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x * 2, x * 3


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5))
        self.pair = _PairOut()
        self.head = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pair(self.body(x))[0])


def test_tap_records_named_outputs() -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(3, 4)
    tap = FeatureTap(net, ["body.0", "pair", "head"])
    out = net(x)
    assert set(tap.features) == {"body.0", "pair", "head"}
    hidden = net.body[0](x)
    assert torch.allclose(tap.features["body.0"], hidden)
    # tuple output: element 0
    assert torch.allclose(tap.features["pair"], 2 * torch.relu(hidden))
    assert torch.equal(tap.features["head"], out)
    tap.clear()
    assert tap.features == {}
    tap.remove()
    net(x)
    assert tap.features == {}


def test_tap_keeps_the_graph() -> None:
    net = _Net()
    x = torch.randn(2, 4)
    with FeatureTap(net, ["body.0"]) as tap:
        net(x)
        tap.features["body.0"].sum().backward()
    assert net.body[0].weight.grad is not None
    # the context manager removed the hooks
    tap.clear()
    net(x)
    assert tap.features == {}


def test_unknown_layer_lists_available_names() -> None:
    with pytest.raises(KeyError) as info:
        FeatureTap(_Net(), ["body.7"])
    message = str(info.value)
    assert "body.7" in message
    assert "body.0" in message and "head" in message


def test_feature_shapes_dry_forward_restores_training_flags() -> None:
    net = _Net()
    net.train()
    net.body[2].eval()  # a submodule deliberately left in eval mode stays that way
    shapes = feature_shapes(net, ["body.0", "head"], torch.randn(5, 4))
    assert shapes == {"body.0": (6,), "head": (2,)}
    assert net.training and net.body[0].training
    assert not net.body[2].training
    # the temporary hooks are gone
    assert all(not m._forward_hooks for m in net.modules())


def test_feature_shapes_with_keyword_inputs() -> None:
    class _Kw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 5)

        def forward(self, pixel_values: Tensor) -> Tensor:
            return self.proj(pixel_values)

    assert feature_shapes(_Kw(), ["proj"], {"pixel_values": torch.zeros(2, 7, 3)}) == {
        "proj": (7, 5)
    }
