"""``timm:<name>`` model specs: built offline with the task's classes, tapped by module name,
plugged in as a student; unknown names and downloads refused in one line. Ray-free."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file, save_model

from raydistill.cli import main
from raydistill.config import JobError, ModelSpec, load_job
from raydistill.distill import Distiller
from raydistill.distill.taps import FeatureTap, feature_shapes
from raydistill.models import build_model, save_weights

timm = pytest.importorskip("timm")

# Fast to build on CPU and fine with tiny inputs: a ResNet on 8x8 digits, a MobileNetV3 on
# 28x28 (Fashion-MNIST size), a two-block ViT on 8x8 in 4x4 patches.
RESNET = ModelSpec(model="timm:resnet10t", args={"in_chans": 1})
MOBILENET = ModelSpec(model="timm:mobilenetv3_small_050", args={"in_chans": 1})
VIT = ModelSpec(
    model="timm:vit_tiny_patch16_224",
    args={"in_chans": 1, "img_size": 8, "patch_size": 4, "depth": 2},
)


@pytest.fixture
def no_downloads(monkeypatch):
    """Every way timm's loader could reach the network raises."""
    from timm.models import _builder

    def refuse(*_args, **_kwargs):
        raise AssertionError("timm tried to download")

    for name in ("load_state_dict_from_hf", "load_state_dict_from_url", "download_cached_file"):
        monkeypatch.setattr(_builder, name, refuse)


@pytest.mark.parametrize(
    ("spec", "size"), [(RESNET, 8), (MOBILENET, 28), (VIT, 8)], ids=["resnet", "mobilenet", "vit"]
)
def test_timm_models_get_the_tasks_classes(spec, size, no_downloads):
    model = build_model(spec, num_classes=7).eval()
    x = torch.randn(3, 1, size, size)
    with torch.no_grad():
        out = model(x)
        # Ray ships models between processes by pickling them
        again = pickle.loads(pickle.dumps(model))(x)
    assert out.shape == (3, 7)
    assert model.num_classes == 7
    assert torch.equal(again, out)


def test_feature_taps_name_timm_modules():
    resnet = build_model(RESNET, 10)
    assert feature_shapes(resnet, ["layer2", "layer4"], torch.zeros(2, 1, 8, 8)) == {
        "layer2": (128, 1, 1),
        "layer4": (512, 1, 1),
    }
    vit = build_model(VIT, 10)
    with FeatureTap(vit, ["blocks.1"]) as tap:
        vit(torch.zeros(2, 1, 8, 8))
    # 4 patches + the class token, width 192
    assert tap.features["blocks.1"].shape == (2, 5, 192)
    with pytest.raises(KeyError, match="did you mean layer4"):
        FeatureTap(resnet, ["layer5"])


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("timm:resnet10", r"timm has no model 'resnet10'; close matches: resnet10t"),
        ("timm:mobilenetv3_smal_050", "close matches: mobilenetv3_small_050"),
        ("timm:resnet18.no_such_tag", "no pretrained tag 'no_such_tag' .*a1_in1k"),
        ("timm:hf-hub:timm/resnet18.a1_in1k", "nothing downloads at run time"),
    ],
)
def test_unknown_or_hub_names_fail_in_one_line(spec, why):
    with pytest.raises(JobError, match=why) as err:
        build_model(ModelSpec(model=spec), 10)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ({"pretrained": True}, "pretrained: true would download weights.*args.pretrained_file"),
        ({"pretrained_cfg_overlay": {"hf_hub_id": "x/y"}}, "not used here"),
        ({"checkpoint_path": "w.pth"}, "not used here"),
        ({"no_such_arg": 1}, "unexpected keyword argument 'no_such_arg'"),
    ],
)
def test_downloads_and_bad_args_are_refused_in_one_line(args, why, no_downloads):
    with pytest.raises(JobError, match=why) as err:
        build_model(ModelSpec(model="timm:resnet10t", args=args), 10)
    assert "\n" not in str(err.value)


def test_pretrained_file_is_fitted_to_the_task_without_a_download(tmp_path, no_downloads):
    """timm's 1000-class, 3-channel weights in a local file start a 10-class, 1-channel model:
    the head is new, the first conv adapted, every other weight the file's."""
    source = timm.create_model("mobilenetv3_small_050", pretrained=False)
    weights = tmp_path / "model.safetensors"
    save_file(source.state_dict(), str(weights))
    spec = ModelSpec(
        model="timm:mobilenetv3_small_050", args={"in_chans": 1, "pretrained_file": str(weights)}
    )
    model = build_model(spec, 10)
    assert torch.equal(model.blocks[2][0].conv_pw.weight, source.blocks[2][0].conv_pw.weight)
    assert model.conv_stem.weight.shape[1] == 1 and model.classifier.out_features == 10
    # build_model(load=False): the caller loads trained weights; the file is not read
    weights.unlink()
    build_model(spec, 10, load=False)
    with pytest.raises(JobError, match="pretrained_file not found"):
        build_model(spec, 10)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran while loading pretrained weights",))


def test_pretrained_file_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Evil()}, path, pickle_module=pickle)
    spec = ModelSpec(model="timm:resnet10t", args={"pretrained_file": str(path)})
    with pytest.raises(JobError, match="cannot be read safely") as err:
        build_model(spec, 10)
    assert "\n" not in str(err.value)


def test_checkpoint_loads_into_a_timm_model(tmp_path):
    model = build_model(RESNET, 10)
    path = save_weights(model, tmp_path / "student.pt")
    loaded = build_model(RESNET.model_copy(update={"checkpoint": path}), 10)
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_received_timm_export_is_rebuilt_untrusted_without_reading_its_paths(tmp_path):
    """timm: is on the allow-list; the metadata's args cannot make raydistill read a file."""
    from raydistill.export import load_safetensors

    model = build_model(RESNET, 10, load=False).eval()
    path = tmp_path / "student.safetensors"
    args = {**RESNET.args, "pretrained_file": str(tmp_path / "never-read.safetensors")}
    metadata = {"raydistill.model": RESNET.model, "raydistill.args": json.dumps(args)}
    save_model(model, str(path), metadata={**metadata, "num_classes": "10"})
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_safetensors(path)(x), model(x))


def test_job_with_a_timm_student_validates_and_plugs_in(write_job):
    from raydistill.data.sources import load_splits
    from raydistill.pipeline import check_pair

    student = {"model": "timm:resnet10t", "args": {"in_chans": 1}}
    path = write_job({"student": student, "distill.feature_layers": {"layer4": "features"}})
    job = load_job(path)
    assert job.student.model == "timm:resnet10t"
    ok = CliRunner().invoke(main, ["validate", str(path)])
    assert ok.exit_code == 0, ok.output
    # the task's dry forward sizes the feature adapter from the timm student's tap
    shapes = check_pair(job, None, load_splits(job.data)["train"])
    assert shapes[0]["layer4"] == (512, 1, 1)
    bad = CliRunner().invoke(main, ["validate", str(write_job({"student.model": "timm:resnet10"}))])
    assert bad.exit_code != 0 and "close matches: resnet10t" in bad.output
    assert "Traceback" not in bad.output


def test_timm_student_distils_from_a_zoo_teacher():
    """Logits and a feature term (timm ``layer4`` against the teacher's ``features``) train the
    timm student: the loss reaches its weights, none reaches the teacher."""
    torch.manual_seed(0)
    student = build_model(RESNET, 10)
    teacher = build_model(
        ModelSpec(model="raydistill.models.zoo:digits_cnn", args={"width": 8}), 10
    )
    distiller = Distiller(
        student,
        teacher,
        temperature=2.0,
        alpha=0.5,
        feature_layers={"layer4": "features"},
        feature_weight=1.0,
    )
    distiller.build_adapters(torch.randn(2, 1, 8, 8))
    distiller.train()
    result = distiller.step(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert result.soft.item() > 0 and result.feature.item() > 0
    result.total.backward()
    # the stem (timm zero-initialises each residual branch's last norm: the first step's
    # gradient reaches the stem through the shortcuts)
    assert student.conv1[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
