"""The Distiller module: teacher handling, loss paths, feature adapters and a training loop."""

from __future__ import annotations

import copy
import math
import pickle
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

from raydistill.distill import ConvAdapter, Distiller, DistillLoss, PoolLinearAdapter

E = math.e
KD_T2 = 4 * (E - 1) / (E + math.sqrt(E) + 1)  # logits [1,2,3] vs [3,2,1] at T=2: 1.2806267
CE_123_LABEL2 = math.log(1 + 1 / E + 1 / E**2)  # logits [1,2,3], label 2: 0.4076060


def _fixed_logits(values: list[float], in_features: int = 2) -> nn.Linear:
    """A model whose logits are ``values`` for every input."""
    model = nn.Linear(in_features, len(values))
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor(values))
    return model


class _TinyCNN(nn.Module):
    def __init__(self, channels: int, stride: int, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=stride, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(channels, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def _cnn_pair() -> tuple[_TinyCNN, _TinyCNN]:
    torch.manual_seed(0)
    # student: 4 channels at 4x4; teacher: 8 channels at 8x8 (for 8x8 inputs)
    return _TinyCNN(channels=4, stride=2), _TinyCNN(channels=8, stride=1)


def _feature_distiller(**kwargs: object) -> Distiller:
    student, teacher = _cnn_pair()
    distiller = Distiller(
        student,
        teacher,
        temperature=2.0,
        alpha=0.5,
        # map -> map (channels 4->8, upsampled 4x4->8x8), map -> vector (pool, 4->3)
        feature_layers={"body.1": "body.1", "body.3": "head"},
        feature_weight=1.0,
        **kwargs,  # type: ignore[arg-type]
    )
    distiller.build_adapters(torch.randn(2, 1, 8, 8))
    return distiller


def test_teacher_is_not_part_of_the_module() -> None:
    student, teacher = _cnn_pair()
    distiller = Distiller(student, teacher)
    assert distiller.teacher is teacher
    assert all(key.startswith("student.") for key in distiller.state_dict())
    assert len(distiller.state_dict()) == len(student.state_dict())
    assert {id(p) for p in distiller.parameters()} == {id(p) for p in student.parameters()}
    assert list(distiller.trainable_parameters()) == list(student.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    distiller.train()
    assert student.training and not teacher.training
    distiller.to(torch.float64)
    assert next(student.parameters()).dtype == torch.float64
    assert next(teacher.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="same module"):
        Distiller(student, student)


def test_baseline_path_is_cross_entropy() -> None:
    distiller = Distiller(_fixed_logits([1.0, 2.0, 3.0]))
    result = distiller.step(torch.randn(4, 2), torch.tensor([2, 2, 2, 2]))
    assert isinstance(result, DistillLoss)
    assert result.total.item() == pytest.approx(0.4076060, rel=1e-5)
    assert result.hard.item() == pytest.approx(CE_123_LABEL2, rel=1e-5)
    assert result.soft.item() == 0.0 and result.feature.item() == 0.0
    assert result.weights is None
    # baseline ignores alpha: mixed labels give the plain mean CE
    mixed = distiller.step(torch.randn(2, 2), torch.tensor([2, 0]))
    # label 0: log(1 + e + e^2)
    assert mixed.total.item() == pytest.approx((CE_123_LABEL2 + math.log(1 + E + E**2)) / 2, 1e-5)
    with pytest.raises(ValueError, match="no teacher"):
        distiller.teacher_outputs(torch.randn(1, 2))


def test_distilled_loss_hand_value() -> None:
    distiller = Distiller(
        _fixed_logits([1.0, 2.0, 3.0]), _fixed_logits([3.0, 2.0, 1.0]), temperature=2, alpha=0.25
    )
    result = distiller.step(torch.randn(3, 2), torch.tensor([2, 2, 2]))
    assert result.soft.item() == pytest.approx(1.2806267, rel=1e-5)
    assert result.hard.item() == pytest.approx(0.4076060, rel=1e-5)
    # 0.25 * 1.2806267 + 0.75 * 0.4076060
    assert result.total.item() == pytest.approx(0.6258612, rel=1e-5)
    assert 0.25 * KD_T2 + 0.75 * CE_123_LABEL2 == pytest.approx(0.6258612, abs=1e-7)
    floats = result.as_floats()
    assert set(floats) == {"loss", "soft", "hard", "feature"}
    assert floats["loss"] == pytest.approx(0.6258612, rel=1e-5)


def test_loss_with_given_teacher_logits_and_shape_error() -> None:
    distiller = Distiller(nn.Linear(2, 3), temperature=1.0, alpha=1.0)
    student = torch.tensor([[1.0, 2.0, 3.0]])
    result = distiller.loss(student, torch.tensor([0]), torch.tensor([[3.0, 2.0, 1.0]]))
    # alpha = 1: soft only, 2 (e^2 - 1) / (e^2 + e + 1) at T=1
    assert result.total.item() == pytest.approx(1.1504208, rel=1e-5)
    with pytest.raises(ValueError, match=r"\[1, 3\].*\[1, 4\]"):
        distiller.loss(student, torch.tensor([0]), torch.zeros(1, 4))


def test_schedules_follow_the_epoch() -> None:
    distiller = Distiller(
        nn.Linear(2, 3),
        temperature={"kind": "step", "start": 5.0, "step": -0.5, "every": 10, "floor": 1.0},
        alpha={"kind": "linear", "start": 0.9, "end": 0.5},
        total_epochs=11,
    )
    assert (distiller.temperature, distiller.alpha) == (5.0, pytest.approx(0.9))
    distiller.set_epoch(5)
    assert distiller.alpha == pytest.approx(0.7)
    distiller.set_epoch(10)
    assert (distiller.temperature, distiller.alpha) == (4.5, pytest.approx(0.5))
    with pytest.raises(ValueError, match="epochs"):
        Distiller(nn.Linear(2, 3), alpha={"kind": "linear", "start": 0.9, "end": 0.5})
    with pytest.raises(ValueError, match="alpha"):
        Distiller(nn.Linear(2, 3), alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        Distiller(
            nn.Linear(2, 3),
            temperature={"kind": "step", "start": 1.0, "step": -1.0},
            total_epochs=3,
        )


def test_weighting_reaches_the_loss() -> None:
    teacher = nn.Linear(2, 2)
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        teacher.bias.zero_()
    distiller = Distiller(nn.Linear(2, 2), teacher, weighting="teacher_correct", alpha=0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])  # teacher says 0, 1, 0
    result = distiller.step(x, torch.tensor([0, 0, 0]))
    assert result.weights is not None
    assert result.weights.tolist() == pytest.approx([1.5, 0.0, 1.5])


def test_keyword_inputs_and_logits_attribute() -> None:
    class _Hf(nn.Module):
        def __init__(self, bias: list[float]) -> None:
            super().__init__()
            self.inner = _fixed_logits(bias)

        def forward(self, pixel_values: Tensor) -> SimpleNamespace:
            return SimpleNamespace(logits=self.inner(pixel_values))

    distiller = Distiller(_Hf([1.0, 2.0, 3.0]), _Hf([3.0, 2.0, 1.0]), temperature=2.0, alpha=1.0)
    result = distiller.step({"pixel_values": torch.randn(2, 2)}, torch.tensor([0, 1]))
    assert result.total.item() == pytest.approx(1.2806267, rel=1e-5)


def test_feature_path_builds_adapters_from_a_dry_forward() -> None:
    student, teacher = _cnn_pair()
    distiller = Distiller(
        student,
        teacher,
        feature_layers={"body.1": "body.1", "body.3": "head"},
        feature_weight=1.0,
    )
    assert distiller.feature_pairs == [("body.1", "body.1"), ("body.3", "head")]
    assert len(distiller.adapters) == 0
    with pytest.raises(RuntimeError, match="build_adapters"):
        distiller(torch.randn(2, 1, 8, 8))
    student.train()
    described = distiller.build_adapters(torch.randn(2, 1, 8, 8))
    assert student.training  # the dry forward restored the training flag
    assert set(described) == {"body.1", "body.3"}
    assert "4->8" in described["body.1"] and "bilinear" in described["body.1"]
    assert set(distiller.adapters) == {"body__1", "body__3"}
    assert isinstance(distiller.adapters["body__1"], ConvAdapter)
    assert isinstance(distiller.adapters["body__3"], PoolLinearAdapter)
    assert any(key.startswith("adapters.body__1.") for key in distiller.state_dict())

    x = torch.randn(5, 1, 8, 8)
    logits, features = distiller(x)
    assert logits.shape == (5, 3)
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "body.1": (5, 8, 8, 8),
        "head": (5, 3),
    }
    teacher_logits, teacher_features = distiller.teacher_outputs(x)
    assert {k: tuple(v.shape) for k, v in teacher_features.items()} == {
        "body.1": (5, 8, 8, 8),
        "head": (5, 3),
    }
    assert torch.equal(teacher_features["head"], teacher_logits)
    assert not teacher_logits.requires_grad

    result = distiller.loss(
        logits, torch.zeros(5, dtype=torch.long), teacher_logits, features, teacher_features
    )
    assert result.feature.item() > 0
    result.total.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for adapter in distiller.adapters.values():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_build_adapters_from_given_shapes_without_teacher() -> None:
    distiller = Distiller(_TinyCNN(4, 2), feature_layers=["body.1"])
    with pytest.raises(ValueError, match="teacher_shapes"):
        distiller.build_adapters(torch.randn(1, 1, 8, 8))
    described = distiller.build_adapters(
        student_shapes={"body.1": (4, 4, 4)}, teacher_shapes={"body.1": (4, 2, 2)}
    )
    assert "pool" in described["body.1"]
    _, features = distiller(torch.randn(3, 1, 8, 8))
    assert features["body.1"].shape == (3, 4, 2, 2)
    assert Distiller(nn.Linear(2, 2)).build_adapters(torch.randn(1, 2)) == {}


def test_feature_grad_scale_only_scales_the_backbone_gradient() -> None:
    distiller = _feature_distiller()
    x = torch.randn(4, 1, 8, 8)
    teacher_logits, teacher_features = distiller.teacher_outputs(x)
    labels = torch.zeros(4, dtype=torch.long)

    def feature_grads(scale: float) -> tuple[Tensor, Tensor]:
        distiller.zero_grad(set_to_none=True)
        distiller.feature_grad_scale = scale
        logits, features = distiller(x)
        distiller.loss(
            logits, labels, teacher_logits, features, teacher_features
        ).feature.backward()
        backbone = distiller.student.body[0].weight.grad
        adapter = distiller.adapters["body__1"].proj.weight.grad
        assert backbone is not None and adapter is not None
        return backbone.clone(), adapter.clone()

    backbone_1, adapter_1 = feature_grads(1.0)
    backbone_2, adapter_2 = feature_grads(2.0)
    backbone_0, adapter_0 = feature_grads(0.0)
    assert backbone_1.abs().sum() > 0
    assert torch.allclose(backbone_2, 2 * backbone_1, atol=1e-6)
    assert torch.equal(backbone_0, torch.zeros_like(backbone_0))
    assert torch.allclose(adapter_2, adapter_1) and torch.allclose(adapter_0, adapter_1)


def test_missing_features_raise() -> None:
    distiller = _feature_distiller()
    x = torch.randn(2, 1, 8, 8)
    labels = torch.zeros(2, dtype=torch.long)
    teacher_logits, teacher_features = distiller.teacher_outputs(x)
    logits, features = distiller(x)
    with pytest.raises(ValueError, match="teacher_features"):
        distiller.loss(logits, labels, teacher_logits, features, None)
    with pytest.raises(ValueError, match="'head'"):
        distiller.loss(
            logits, labels, teacher_logits, features, {"body.1": teacher_features["body.1"]}
        )


def test_distillation_loop_on_separable_data_learns() -> None:
    torch.manual_seed(0)
    n = 256
    x = torch.randn(n, 2)
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    teacher = nn.Linear(2, 2)  # knows the rule exactly
    with torch.no_grad():
        teacher.weight.copy_(torch.tensor([[-2.0, -1.0], [2.0, 1.0]]))
        teacher.bias.zero_()
    assert (teacher(x).argmax(1) == labels).all()
    student = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    distiller = Distiller(student, teacher, temperature=2.0, alpha=0.7)
    params = list(distiller.trainable_parameters())
    losses = []
    # Hand-written gradient descent: torch.optim's first use imports torch._dynamo (~1 s).
    for _ in range(30):
        result = distiller.step(x, labels)
        distiller.zero_grad(set_to_none=True)
        result.total.backward()
        with torch.no_grad():
            for param in params:
                param -= 0.5 * param.grad
        losses.append(result.total.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert sum(losses[-5:]) < sum(losses[:5])
    with torch.no_grad():
        accuracy = (distiller(x)[0].argmax(1) == labels).float().mean().item()
    assert accuracy > 0.95


def test_copies_and_pickles_keep_their_own_taps() -> None:
    distiller = _feature_distiller()
    x = torch.randn(2, 1, 8, 8)
    for clone in (copy.deepcopy(distiller), pickle.loads(pickle.dumps(distiller))):
        assert clone.teacher is not None and clone.teacher is not distiller.teacher
        _, features = clone(x)
        _, teacher_features = clone.teacher_outputs(x)
        assert set(features) == set(teacher_features) == {"body.1", "head"}
    # the original still records into its own tap
    assert set(distiller(x)[1]) == {"body.1", "head"}


def test_feature_layers_accept_pair_objects_and_reject_duplicates() -> None:
    pairs = [SimpleNamespace(student="body.1", teacher="body.3"), ("body.3", "head")]
    student, teacher = _cnn_pair()
    distiller = Distiller(student, teacher, feature_layers=pairs)  # type: ignore[arg-type]
    assert distiller.feature_pairs == [("body.1", "body.3"), ("body.3", "head")]
    with pytest.raises(ValueError, match="more than one"):
        Distiller(student, teacher, feature_layers=[("body.1", "head"), ("body.3", "head")])
    with pytest.raises(KeyError, match=r"body\.9"):
        Distiller(student, teacher, feature_layers=["body.9"])
