"""Opening a received ``.safetensors`` export builds its model only through an allow-list:
its metadata cannot make raydistill import and call code (issue 25, scenario 7). Ray-free."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file, save_model

from raydistill.config import JobError, ModelSpec
from raydistill.export import load_safetensors
from raydistill.models.specs import build_model, check_spec_allowed


def _crafted(path: Path, model: str, args: dict, tensors: dict | None = None) -> Path:
    metadata = {"raydistill.model": model, "raydistill.args": json.dumps(args), "num_classes": "10"}
    save_file(tensors or {"weight": torch.zeros(1)}, str(path), metadata=metadata)
    return path


def test_a_file_naming_os_system_runs_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    path = _crafted(tmp_path / "evil.safetensors", "os:system", {"command": f"touch {marker}"})
    with pytest.raises(JobError, match="not on the allow-list") as err:
        load_safetensors(path)
    assert "os:system" in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "spec",
    [
        "builtins:exec",
        "subprocess:run",
        "raydistill.files:atomic_write_text",  # raydistill, but not a model factory
        "raydistill.pipeline:run_job",
        "raydistill.models.zoo:_predictor",
        "raydistill.models.zoo:os.system",
        "tests.helpers:anything",
    ],
)
def test_only_registries_and_raydistill_model_factories_are_allowed(spec):
    with pytest.raises(JobError, match="not on the allow-list"):
        check_spec_allowed(spec, source="export.safetensors's metadata")
    check_spec_allowed(spec, trusted=True)  # the caller vouches for the source


@pytest.mark.parametrize(
    "spec",
    ["torchvision:resnet18", "timm:resnet18", "hf:data/minilm", "raydistill.models.zoo:digits_cnn"],
)
def test_allowed_specs_pass(spec):
    check_spec_allowed(spec)


def test_an_allowed_model_is_rebuilt_and_a_user_factory_needs_trust(tmp_path):
    spec = ModelSpec(model="raydistill.models.zoo:digits_cnn", args={"width": 8})
    model = build_model(spec, 10, load=False).eval()
    path = tmp_path / "student.safetensors"
    metadata = {
        "raydistill.model": spec.model,
        "raydistill.args": json.dumps(spec.args),
        "num_classes": "10",
    }
    save_model(model, str(path), metadata=metadata)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_safetensors(path)(x), model(x))

    # the same weights under a user factory (the test helpers' counting teacher module)
    metadata["raydistill.model"] = "counting_teacher:counting_cnn"
    metadata["raydistill.args"] = json.dumps({"width": 8, "count_dir": str(tmp_path)})
    save_model(model, str(path), metadata=metadata)
    with pytest.raises(JobError, match="not on the allow-list"):
        load_safetensors(path)
    rebuilt = load_safetensors(path, trusted=True)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_damaged_metadata_is_one_line(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file(
        {"weight": torch.zeros(1)},
        str(path),
        metadata={
            "raydistill.model": "raydistill.models.zoo:digits_cnn",
            "raydistill.args": "{not json",
            "num_classes": "10",
        },
    )
    with pytest.raises(JobError, match="damaged raydistill metadata") as err:
        load_safetensors(path)
    assert "\n" not in str(err.value)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(JobError, match="not a readable safetensors file"):
        load_safetensors(tmp_path / "junk.safetensors")


def test_an_untrusted_run_directory_cannot_name_code(tmp_path):
    """``export_run(..., trusted=False)`` (a run directory received from elsewhere): its
    job.yaml naming ``os:system`` as the student is refused before anything is built."""
    import yaml

    from raydistill.export import export_run

    root = Path(__file__).resolve().parents[1]
    marker = tmp_path / "code-ran"
    raw = yaml.safe_load((root / "jobs" / "digits.yaml").read_text())
    raw["student"] = {"model": "os:system", "args": {"command": f"touch {marker}"}}
    run_dir = tmp_path / "received"
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(JobError, match=r"job\.yaml \(student\) names model 'os:system'"):
        export_run(run_dir, "onnx", trusted=False)
    assert not marker.exists()
