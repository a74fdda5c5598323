"""raydistill export: each format is loaded back with its own runtime and matches PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from raydistill.cli import main
from raydistill.config import JobError
from raydistill.data.sources import load_splits
from raydistill.export import export_run, load_safetensors
from raydistill.models import build_model, load_weights

TOLERANCE = 1e-4  # logits of order 1-10; float32 kernels differ in summation order


def _pytorch(tiny_run, role: str = "student") -> tuple[torch.nn.Module, torch.Tensor]:
    """The trained model as PyTorch runs it, and every test input (a batch size never traced)."""
    spec = tiny_run.teacher if role == "teacher" else tiny_run.student
    model = build_model(spec, 10, load=False)
    load_weights(model, tiny_run.run_dir / role / "model.pt")
    test = load_splits(tiny_run.data)["test"]
    return model.eval(), torch.from_numpy(test.inputs.copy())


def _load_back(fmt: str, path, tiny_run) -> np.ndarray:
    """Outputs of the exported file, read with the format's own loader (not raydistill's)."""
    _, x = _pytorch(tiny_run)
    if fmt == "torchscript":
        with pytest.warns(FutureWarning):  # torch 2.14 deprecates TorchScript loading
            scripted = torch.jit.load(str(path))
        return scripted.eval()(x).detach().numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].name == "input"
        return session.run(["logits"], {"input": x.numpy()})[0]
    from safetensors.torch import load_file

    fresh = build_model(tiny_run.student, 10, load=False)
    fresh.load_state_dict(load_file(str(path)))
    return fresh.eval()(x).detach().numpy()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "safetensors"])
def test_export_loads_back_and_matches_pytorch(tiny_run, fmt):
    result = export_run(tiny_run.run_dir, fmt)
    assert result.path.parent == tiny_run.run_dir / "export"
    assert result.path.is_file() and result.size_bytes == result.path.stat().st_size
    assert result.max_abs_diff < TOLERANCE

    model, x = _pytorch(tiny_run)
    with torch.no_grad():
        expected = model(x).numpy()
        untrained = build_model(tiny_run.student, 10, load=False).eval()(x).numpy()
    got = _load_back(fmt, result.path, tiny_run)
    assert got.shape == (len(x), 10)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)
    assert np.abs(untrained - expected).max() > 100 * TOLERANCE  # the trained weights went out


def test_safetensors_rebuilds_the_model_from_its_metadata(tiny_run, tmp_path):
    path = export_run(tiny_run.run_dir, "safetensors", output=tmp_path / "s.safetensors").path
    model, x = _pytorch(tiny_run)
    rebuilt = load_safetensors(path)
    assert type(rebuilt) is type(model)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_teacher_stage_to_a_chosen_path(tiny_run, tmp_path):
    result = export_run(tiny_run.run_dir, "onnx", stage="teacher", output=tmp_path / "t.onnx")
    assert result.path == tmp_path / "t.onnx" and result.max_abs_diff < TOLERANCE
    teacher, x = _pytorch(tiny_run, "teacher")
    import onnxruntime

    got = onnxruntime.InferenceSession(str(result.path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, teacher(x).numpy(), atol=TOLERANCE, rtol=0)


def test_cli_export_and_its_errors(tiny_run, tmp_path):
    runner = CliRunner()
    args = ["export", str(tiny_run.run_dir), "--format", "safetensors"]
    ok = runner.invoke(main, [*args, "-o", str(tmp_path / "a.safetensors")])
    assert ok.exit_code == 0, ok.output
    assert "student -> " in ok.output and "max |logit difference| vs PyTorch" in ok.output

    hf = runner.invoke(main, ["export", str(tiny_run.run_dir), "--format", "hf"])
    assert hf.exit_code == 2
    assert "Hugging Face" in hf.output and "DigitsCNN" in hf.output

    not_a_run = runner.invoke(main, ["export", str(tmp_path), "--format", "onnx"])
    assert not_a_run.exit_code == 2 and "not a run directory" in not_a_run.output

    bad = runner.invoke(main, ["export", str(tiny_run.run_dir), "--format", "pickle"])
    assert bad.exit_code == 2 and "pickle" in bad.output


def test_untrained_stage_is_refused(tiny_run, tmp_path):
    run_dir = tmp_path / "half"
    run_dir.mkdir()
    (run_dir / "job.yaml").write_text((tiny_run.run_dir / "job.yaml").read_text())
    with pytest.raises(JobError, match="the student has no trained weights"):
        export_run(run_dir, "onnx")
