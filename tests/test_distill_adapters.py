"""Adapters from student feature shapes to teacher feature shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from raydistill.distill import ConvAdapter, LinearAdapter, PoolLinearAdapter, build_adapter


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_conv_channels_and_pooling_when_student_is_larger() -> None:
    adapter = build_adapter((16, 8, 8), (32, 4, 4))
    assert isinstance(adapter, ConvAdapter)
    assert adapter.resize == "pool"
    assert isinstance(adapter.proj, nn.Conv2d)
    assert adapter.proj.kernel_size == (1, 1)
    assert _params(adapter) == 16 * 32 + 32
    assert adapter(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
    assert "16->32" in repr(adapter) and "pool" in repr(adapter)


def test_conv_bilinear_when_student_is_smaller() -> None:
    adapter = build_adapter((8, 4, 4), (8, 7, 9))
    assert isinstance(adapter, ConvAdapter)
    assert adapter.resize == "bilinear"
    assert isinstance(adapter.proj, nn.Identity)
    assert adapter(torch.randn(3, 8, 4, 4)).shape == (3, 8, 7, 9)
    # mixed: taller but narrower than the teacher map -> interpolation
    mixed = build_adapter((4, 8, 2), (4, 4, 4))
    assert mixed.resize == "bilinear"
    assert mixed(torch.randn(1, 4, 8, 2)).shape == (1, 4, 4, 4)


def test_conv_identity_when_shapes_match() -> None:
    adapter = build_adapter((8, 5, 5), (8, 5, 5))
    x = torch.randn(2, 8, 5, 5)
    assert _params(adapter) == 0
    assert adapter.resize == "none"
    assert torch.equal(adapter(x), x)


def test_pooling_averages_blocks() -> None:
    adapter = build_adapter((1, 4, 4), (1, 2, 2))
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # 2x2 blocks of [[0..3],[4..7],[8..11],[12..15]]: (0+1+4+5)/4 = 2.5, ...
    assert adapter(x).flatten().tolist() == [2.5, 4.5, 10.5, 12.5]


def test_bilinear_upsampling_values() -> None:
    adapter = build_adapter((1, 2, 2), (1, 2, 4))
    x = torch.tensor([[[[0.0, 4.0], [0.0, 4.0]]]])
    # align_corners=False: output column j samples input x = (j + 0.5) / 2 - 0.5, clamped at 0:
    # -0.25 -> 0, 0.25 -> 1, 0.75 -> 3, 1.25 -> 4 (clamped at the last column)
    out = adapter(x)
    assert out.shape == (1, 1, 2, 4)
    assert out[0, 0].tolist() == [pytest.approx([0.0, 1.0, 3.0, 4.0])] * 2


def test_vector_linear() -> None:
    adapter = build_adapter((10,), (6,))
    assert isinstance(adapter, LinearAdapter)
    assert isinstance(adapter.proj, nn.Linear)
    assert adapter(torch.randn(4, 10)).shape == (4, 6)
    assert "10->6" in repr(adapter)
    same = build_adapter([6], [6])
    assert _params(same) == 0


def test_token_sequences() -> None:
    adapter = build_adapter((5, 12), (5, 24))
    assert isinstance(adapter, LinearAdapter)
    assert _params(adapter) == 12 * 24 + 24
    assert adapter(torch.randn(2, 5, 12)).shape == (2, 5, 24)
    with pytest.raises(ValueError, match=r"\(5, 12\).*\(7, 24\)"):
        build_adapter((5, 12), (7, 24))


def test_map_to_vector_pools_then_projects() -> None:
    adapter = build_adapter((16, 4, 4), (32,))
    assert isinstance(adapter, PoolLinearAdapter)
    assert adapter(torch.randn(2, 16, 4, 4)).shape == (2, 32)
    identity = build_adapter((3, 2, 2), (3,))
    x = torch.arange(12.0).reshape(1, 3, 2, 2)
    assert identity(x).tolist() == [[1.5, 5.5, 9.5]]


@pytest.mark.parametrize(
    ("student", "teacher"),
    [((10,), (3, 4, 4)), ((4, 8), (32,)), ((1, 2, 3, 4), (1, 2, 3, 4)), ((0,), (4,))],
)
def test_unsupported_pairs_name_both_shapes(student: tuple, teacher: tuple) -> None:
    with pytest.raises(ValueError) as info:
        build_adapter(student, teacher)
    assert str(student) in str(info.value) and str(teacher) in str(info.value)
