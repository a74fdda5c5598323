"""Models from specs and safe weight files."""

from __future__ import annotations

import pickle

import pytest
import torch

from raydistill.config import JobError, ModelSpec
from raydistill.models import build_model, count_parameters, load_weights, save_weights


def test_torchvision_spec_gets_num_classes():
    model = build_model(ModelSpec(model="torchvision:resnet18"), num_classes=7)
    assert model.fc.out_features == 7
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 7)


def test_factory_spec_with_args():
    model = build_model(ModelSpec(model="raydistill.models.zoo:mlp", args={"hidden": [16, 8]}), 10)
    assert model(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert count_parameters(model) == 64 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("torchvision:not_a_net", "torchvision has no model"),
        ("no_such_module_xyz:make", "cannot import module"),
        ("raydistill.models.zoo:missing", "has no callable"),
    ],
)
def test_bad_specs_are_clear(spec, why):
    with pytest.raises(JobError, match=why):
        build_model(ModelSpec(model=spec), 10)


def test_weights_round_trip_and_other_model_refused(tmp_path):
    spec = ModelSpec(model="raydistill.models.zoo:digits_cnn", args={"width": 8})
    model = build_model(spec, 10)
    path = save_weights(model, tmp_path / "w.pt", {"role": "teacher"})
    again = load_weights(build_model(spec, 10), path)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = build_model(ModelSpec(model="raydistill.models.zoo:mlp"), 10)
    with pytest.raises(JobError, match="does not fit"):
        load_weights(other, path)
    wider = build_model(ModelSpec(model="raydistill.models.zoo:digits_cnn", args={"width": 16}), 10)
    with pytest.raises(JobError, match="shape mismatch"):
        load_weights(wider, path)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Evil()}, path, pickle_module=pickle)
    with pytest.raises(JobError, match="cannot be read safely"):
        load_weights(build_model(ModelSpec(model="raydistill.models.zoo:mlp"), 10), path)


def test_spec_loads_its_checkpoint(tmp_path):
    spec = ModelSpec(model="raydistill.models.zoo:mlp")
    model = build_model(spec, 10)
    path = save_weights(model, tmp_path / "m.pt")
    loaded = build_model(ModelSpec(model=spec.model, checkpoint=path), 10)
    assert torch.equal(loaded.head.weight, model.head.weight)
