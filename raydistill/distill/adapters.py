"""Adapters that map a student feature to the shape of the teacher feature it is matched with.

Shapes here exclude the batch dimension: ``(C, H, W)`` for feature maps, ``(D,)`` for vectors,
``(L, D)`` for token sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

ResizeMode = Literal["none", "pool", "bilinear"]


class ConvAdapter(nn.Module):
    """Feature map to feature map: [N, C_s, H_s, W_s] -> [N, C_t, H_t, W_t].

    A 1x1 convolution maps the channels (Identity when ``C_s == C_t``), then the map is resized to
    ``(H_t, W_t)``: adaptive average pooling when the student map is at least as large in both
    dimensions, bilinear interpolation (``align_corners=False``) otherwise.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        in_size: tuple[int, int],
        out_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.proj: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, kernel_size=1)
        )
        self.resize: ResizeMode
        if tuple(in_size) == self.out_size:
            self.resize = "none"
        elif in_size[0] >= out_size[0] and in_size[1] >= out_size[1]:
            self.resize = "pool"
        else:
            self.resize = "bilinear"

    def forward(self, x: Tensor) -> Tensor:
        """[N, C_s, H_s, W_s] -> [N, C_t, H_t, W_t]."""
        x = self.proj(x)
        if self.resize == "pool":
            x = F.adaptive_avg_pool2d(x, self.out_size)
        elif self.resize == "bilinear":
            x = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=False)
        return x

    def extra_repr(self) -> str:
        return (
            f"channels {self.in_channels}->{self.out_channels}, "
            f"resize={self.resize} to {self.out_size[0]}x{self.out_size[1]}"
        )


class LinearAdapter(nn.Module):
    """Linear map over the last dimension: [N, D_s] -> [N, D_t] or [N, L, D_s] -> [N, L, D_t].

    Identity when ``D_s == D_t``.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.proj: nn.Module = (
            nn.Identity() if in_features == out_features else nn.Linear(in_features, out_features)
        )

    def forward(self, x: Tensor) -> Tensor:
        """[N, ..., D_s] -> [N, ..., D_t]."""
        return self.proj(x)

    def extra_repr(self) -> str:
        return f"features {self.in_features}->{self.out_features}"


class PoolLinearAdapter(nn.Module):
    """Feature map to vector: global average pool, then a linear map, [N, C_s, H, W] -> [N, D_t].

    The linear map is Identity when ``C_s == D_t``.
    """

    def __init__(self, in_channels: int, out_features: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_features = out_features
        self.proj: nn.Module = (
            nn.Identity() if in_channels == out_features else nn.Linear(in_channels, out_features)
        )

    def forward(self, x: Tensor) -> Tensor:
        """[N, C_s, H, W] -> [N, D_t]."""
        return self.proj(x.mean(dim=(2, 3)))

    def extra_repr(self) -> str:
        return f"global avg pool, features {self.in_channels}->{self.out_features}"


def build_adapter(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> nn.Module:
    """The adapter mapping a student feature [N, *student_shape] to [N, *teacher_shape].

    Shapes exclude the batch dimension. Supported pairs:

    * ``(C_s, H_s, W_s) -> (C_t, H_t, W_t)``: :class:`ConvAdapter`.
    * ``(D_s,) -> (D_t,)``: :class:`LinearAdapter`.
    * ``(L, D_s) -> (L, D_t)`` (token sequences of equal length): :class:`LinearAdapter`.
    * ``(C_s, H, W) -> (D_t,)``: :class:`PoolLinearAdapter`.

    Anything else raises ValueError naming both shapes.
    """
    s = tuple(int(d) for d in student_shape)
    t = tuple(int(d) for d in teacher_shape)
    if any(d < 1 for d in s + t):
        raise ValueError(f"feature shapes must be positive, got student {s} and teacher {t}")
    if len(s) == 3 and len(t) == 3:
        return ConvAdapter(s[0], t[0], (s[1], s[2]), (t[1], t[2]))
    if len(s) == 1 and len(t) == 1:
        return LinearAdapter(s[0], t[0])
    if len(s) == 2 and len(t) == 2:
        if s[0] != t[0]:
            raise ValueError(
                f"token sequences of different lengths cannot be matched: student {s} "
                f"vs teacher {t} (L, D)"
            )
        return LinearAdapter(s[1], t[1])
    if len(s) == 3 and len(t) == 1:
        return PoolLinearAdapter(s[0], t[0])
    raise ValueError(
        f"no adapter maps a student feature of shape {s} to a teacher feature of shape {t}; "
        "supported: (C,H,W)->(C,H,W), (D,)->(D,), (L,D)->(L,D), (C,H,W)->(D,)"
    )
