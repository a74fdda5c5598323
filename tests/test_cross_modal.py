"""Cross-modal distillation without Ray: the modal mapping, the loss against its formula, joint
training of mapping and student, and the example job's data and validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from raydistill.distill import CrossModalDistiller, build_modal_mapping, soft_target_loss
from raydistill.distill.taps import FeatureTap


class TextNet(nn.Module):
    """A bag-of-embeddings text classifier: ids [N, L] -> logits; ``embed_out`` is [N, D]."""

    def __init__(self, vocab: int = 20, dim: int = 6, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.EmbeddingBag(vocab, dim)
        self.embed_out = nn.Identity()
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed_out(self.embed(ids)))


class ImageNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 5, 3, padding=1)
        self.head = nn.Linear(5, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("teacher_shape", "student_shape", "kind", "width"),
    [((5, 4, 4), (6,), "linear", 5), ((7, 9), (6,), "linear", 9), ((11,), (6,), "mlp", 11)],
)
def test_mapping_pools_then_maps_the_teacher_width(teacher_shape, student_shape, kind, width):
    mapping = build_modal_mapping(kind, teacher_shape, student_shape)
    out = mapping(torch.randn(2, *teacher_shape))
    assert out.shape == (2, 6)
    first = mapping.net if kind == "linear" else mapping.net[0]
    assert first.in_features == width
    with pytest.raises(ValueError, match="must be an embedding"):
        build_modal_mapping(kind, teacher_shape, (4, 6))


def test_loss_is_the_formula_with_the_teacher_mapped_into_the_student_space():
    torch.manual_seed(0)
    teacher, student = ImageNet(), TextNet()
    mapping = nn.Linear(5, 6)
    distiller = CrossModalDistiller(
        teacher,
        student,
        modal_mapping=mapping,
        feature_layers={"embed_out": "conv"},
        alpha=0.3,
        temperature=2.0,
        feature_weight=0.5,
    )
    images, ids = torch.randn(4, 1, 6, 6), torch.randint(0, 20, (4, 5))
    labels = torch.tensor([0, 1, 2, 1])
    out = distiller.step(ids, labels, teacher_inputs=images)

    with torch.no_grad(), FeatureTap(teacher, ["conv"]) as t_tap:
        t_logits = teacher(images)
        mapped = mapping(t_tap.features["conv"].mean(dim=(2, 3)))
    with FeatureTap(student, ["embed_out"]) as s_tap:
        s_logits = student(ids)
        s_embed = s_tap.features["embed_out"]
    centred_s, centred_t = s_embed - s_embed.mean(0), mapped - mapped.mean(0)
    align = (1 - F.cosine_similarity(centred_s, centred_t, dim=-1)).mean()
    soft = soft_target_loss(s_logits, t_logits, 2.0)
    hard = F.cross_entropy(s_logits, labels)
    expected = 0.3 * soft + 0.7 * hard + 0.5 * align
    torch.testing.assert_close(out.total, expected)
    torch.testing.assert_close(out.feature, align)


def test_mapping_and_student_train_jointly_and_the_teacher_stays_frozen():
    torch.manual_seed(0)
    teacher, student = ImageNet(), TextNet()
    distiller = CrossModalDistiller(
        teacher, student, "mlp", feature_layers={"embed_out": "conv"}, alpha=0.0
    )
    images, ids = torch.randn(16, 1, 6, 6), torch.randint(0, 20, (16, 5))
    labels = torch.randint(0, 3, (16,))
    distiller.build_adapters((ids, images))
    assert set(distiller.state_dict()) >= {"adapters.embed_out.net.0.weight"}
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    mapping_before = distiller.adapters["embed_out"].net[0].weight.detach().clone()
    optimizer = torch.optim.Adam(distiller.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        out = distiller.step(ids, labels, teacher_inputs=images)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        losses.append(float(out.feature.detach()))
    assert losses[-1] < 0.5 * losses[0]
    mapping = distiller.adapters["embed_out"].net[0].weight
    assert mapping.grad is not None and float(mapping.grad.abs().sum()) > 0
    assert not torch.allclose(mapping.detach(), mapping_before)  # trained with the student
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_feature_grad_scale_scales_only_the_alignment_gradient_into_the_student():
    images, ids = torch.randn(4, 1, 6, 6), torch.randint(0, 20, (4, 5))
    labels = torch.tensor([0, 1, 2, 1])

    def grads(scale: float) -> tuple[torch.Tensor, torch.Tensor, float]:
        torch.manual_seed(0)
        distiller = CrossModalDistiller(
            ImageNet(),
            TextNet(),
            nn.Linear(5, 6),
            feature_layers={"embed_out": "conv"},
            alpha=0.0,
            feature_weight=1.0,
            feature_grad_scale=scale,
        )
        out = distiller.step(ids, labels, teacher_inputs=images)
        out.total.backward()
        embed = distiller.student.embed.weight.grad
        mapping = distiller.adapters["embed_out"].net.weight.grad
        assert embed is not None and mapping is not None
        return embed.clone(), mapping.clone(), out.total.item()

    embed_1, mapping_1, total_1 = grads(1.0)
    embed_h, mapping_h, total_h = grads(0.5)
    embed_0, mapping_0, total_0 = grads(0.0)
    assert total_1 == total_h == total_0  # the value is unchanged, only its gradient
    # embed grad = hard part + scale * alignment part: 0.5 lies halfway between 0 and 1
    assert not torch.allclose(embed_1, embed_0)
    torch.testing.assert_close(embed_h, (embed_1 + embed_0) / 2)
    # the mapping learns from the alignment at full strength whatever the scale
    torch.testing.assert_close(mapping_h, mapping_1)
    torch.testing.assert_close(mapping_0, mapping_1)
    # at 0 the student's embedding gets the cross entropy's gradient only
    torch.manual_seed(0)
    _, student = ImageNet(), TextNet()  # the same draws as in grads()
    nn.functional.cross_entropy(student(ids), labels).backward()
    torch.testing.assert_close(embed_0, student.embed.weight.grad)


def test_cross_modal_job_keeps_feature_grad_scale(tmp_path, monkeypatch):
    from pathlib import Path

    from raydistill.config import load_job
    from raydistill.data.captions import write_captions

    root = Path(__file__).resolve().parents[1]
    write_captions(tmp_path / "data" / "captions")
    monkeypatch.chdir(tmp_path)
    job = load_job(root / "jobs" / "cross-modal.yaml", ["distill.feature_grad_scale=0.25"])
    distiller = CrossModalDistiller.from_config(
        job.distill,
        TextNet(),
        ImageNet(),
        total_epochs=job.train.epochs,
        feature_layers=[("embed_out", "conv")],
    )
    assert distiller.feature_grad_scale == 0.25


def test_bad_setups_are_refused():
    with pytest.raises(ValueError, match="aligns features"):
        CrossModalDistiller(ImageNet(), TextNet(), feature_layers=[])
    with pytest.raises(ValueError, match="mse or cosine"):
        CrossModalDistiller(
            ImageNet(), TextNet(), feature_layers={"embed_out": "conv"}, feature_loss="at"
        )
    distiller = CrossModalDistiller(ImageNet(), TextNet(), feature_layers={"embed_out": "conv"})
    with pytest.raises(RuntimeError, match="not built"):
        distiller(torch.randint(0, 20, (2, 3)))


def test_example_job_validates_with_its_data(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from pathlib import Path

    from raydistill.config import load_job
    from raydistill.data.captions import write_captions
    from raydistill.data.sources import load_splits
    from raydistill.data.text import for_model
    from raydistill.pipeline import check_pair

    root = Path(__file__).resolve().parents[1]
    write_captions(tmp_path / "data" / "captions")
    monkeypatch.chdir(tmp_path)  # the job's relative data paths
    job = load_job(root / "jobs" / "cross-modal.yaml")
    assert job.distill.feature_weight == 1.0 and job.distill.feature_loss == "cosine"
    splits = load_splits(job.data)
    train = splits["train"]
    assert train.inputs.shape[1:] == (1, 8, 8) and train.texts is not None
    assert sum(len(s) for s in splits.values()) == 1797
    student_shapes, teacher_shapes = check_pair(job, None, train)
    assert student_shapes == {"pooled": (32,)} and teacher_shapes == {"features.7": (64, 4, 4)}
    assert for_model(job, job.teacher, train) is train  # the teacher reads the images
    assert for_model(job, job.student, train).inputs.shape[1:] == (2, 12)


def test_paired_images_keep_their_shape_in_a_fresh_process(tmp_path):
    """Parquet tensor columns read back flat unless Ray's tensor type is registered first; a
    fresh interpreter (nothing imported yet, as on a user's driver) must still see [1, 8, 8]."""
    pytest.importorskip("transformers")
    import subprocess
    import sys

    from raydistill.data.captions import write_captions

    data = write_captions(tmp_path / "captions")
    code = (
        "from raydistill.config import DataConfig\n"
        "from raydistill.data.text import read_text_arrays\n"
        f"cfg = DataConfig(source='parquet', path={str(data / 'captions.parquet')!r}, text={{}})\n"
        "print(tuple(read_text_arrays(cfg)[0].inputs.shape))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "(1797, 1, 8, 8)"
