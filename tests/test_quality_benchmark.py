"""benchmarks/quality.py without running it: every row is a job that loads, and the table's
verdict compares the best variant with the seeds' spread."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("quality", ROOT / "benchmarks" / "quality.py")
assert _spec is not None and _spec.loader is not None
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)


def test_every_row_is_a_job_and_only_the_method_changes():
    from raydistill.config import load_job

    rows = quality.variants([("features.7", "layer2")], "at", 10.0, "confidence", 4.0, 0.7)
    assert list(rows) == [
        quality.ALONE,
        "KD",
        quality.SCHEDULED,
        "KD + AT features",
        "DKD",
        "KD + dynamic weighting (confidence)",
    ]
    jobs = {name: load_job(ROOT / "jobs" / "fashion-mnist.yaml", changes) for name, changes in
            rows.items()}  # fmt: skip
    assert not jobs[quality.ALONE].distill.enabled
    kd, scheduled = jobs["KD"].distill, jobs[quality.SCHEDULED].distill
    assert kd.temperature.values(3) == [4.0] * 3 and kd.alpha.values(3) == [0.7] * 3
    assert scheduled.temperature.values(5) == [8.0, 7.0, 6.0, 5.0, 4.0]
    assert scheduled.alpha.values(3) == pytest.approx([0.7, 0.525, 0.35])
    assert jobs["DKD"].distill.method == "dkd" and kd.method == "kd"
    assert jobs["KD + AT features"].distill.feature_loss == "at"
    assert jobs["KD + dynamic weighting (confidence)"].distill.weighting == "confidence"


def test_the_verdict_weighs_the_gain_against_the_spread():
    teacher = {"acc": 90.0, "params": 1000, "latency": 1.0}

    def row(accs):
        return {"acc": accs, "params": [10] * len(accs), "latency": [0.1] * len(accs)}

    clear = quality.table("t", teacher, {quality.ALONE: row([80, 81]), "KD": row([84, 85])},
                          [0, 1])  # fmt: skip
    assert "best distillation variant: KD, +4.00 points" in clear and "it beats" in clear
    assert "| KD | 84.50 +- 0.71% | 84.00, 85.00 |" in clear and "+42%" in clear
    noisy = quality.table("t", teacher, {quality.ALONE: row([80, 84]), "KD": row([82, 83])},
                          [0, 1])  # fmt: skip
    assert "does NOT beat" in noisy
    worse = quality.table("t", teacher, {quality.ALONE: row([84, 85]), "KD": row([80, 81])},
                          [0, 1])  # fmt: skip
    assert "it is WORSE than the student alone" in worse


def test_distilled_rows_share_one_teacher_cache_per_key(tmp_path):
    """KD-style rows of every seed read one cache; rows whose cache key differs (pool-shipped
    features, the seed of augmented views) get their own; the student alone reads none."""
    from raydistill.config import load_job

    job_file = ROOT / "jobs" / "fashion-mnist.yaml"
    rows = quality.variants([("features.12", "layer2")], "at", 10.0, "confidence", 4.0, 0.7)

    def cache_of(name: str, *extra: str) -> str | None:
        job = load_job(job_file, [*rows[name], *extra])
        overrides = quality.shared_cache_overrides(job, tmp_path)
        if not overrides:
            return None
        assert overrides[0] == "distill.teacher_pass=cache"
        return overrides[1].removeprefix("cache.path=")

    assert cache_of(quality.ALONE) is None
    shared = cache_of("KD", "seed=0")
    assert shared.startswith(str(tmp_path / "teacher-cache"))
    for name in ("KD", quality.SCHEDULED, "DKD", "KD + dynamic weighting (confidence)"):
        assert cache_of(name, "seed=1") == shared
    assert cache_of("KD + AT features") not in (None, shared)
    assert cache_of("KD + AT features", "distill.features_from=worker") == shared
    views = "data.augment={views: 2}"
    assert len({cache_of("KD", views, f"seed={s}") for s in (0, 1)} | {shared}) == 3
    assert cache_of("KD", "distill.teacher_pass=per_epoch") is None


def test_plain_teacher_augmentation_shifts_and_mirrors_only():
    """benchmarks/plain_teacher.py's crop_and_flip: every output is a window of the zero-padded
    input, mirrored or not, and the draws vary across the batch."""
    import torch

    spec = importlib.util.spec_from_file_location("plain", ROOT / "benchmarks" / "plain_teacher.py")
    assert spec is not None and spec.loader is not None
    plain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plain)

    x = torch.rand(16, 1, 6, 6)
    out = plain.crop_and_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    draws = set()
    for i in range(len(x)):
        windows = {
            (dy, dx, f): padded[i, :, dy : dy + 6, dx : dx + 6].flip(-1) if f else
            padded[i, :, dy : dy + 6, dx : dx + 6]
            for dy in range(5) for dx in range(5) for f in (0, 1)
        }  # fmt: skip
        hits = [k for k, w in windows.items() if torch.equal(w, out[i])]
        assert hits, f"image {i} is not a shifted (mirrored) window of its input"
        draws.add(hits[0])
    assert len(draws) > 4


def test_the_errors_table_counts_errors_and_the_share_of_the_gap_each_seed_closes():
    from types import SimpleNamespace

    # 15 reliability bins holding 1,000 test rows: 90% accuracy is 100 errors
    score = SimpleNamespace(accuracy=0.9, reliability=((600, 0.9, 0.9), (400, 0.5, 0.9)))
    assert quality.test_errors(score) == (100, 1000)
    assert quality.test_errors(SimpleNamespace(accuracy=1.0, reliability=())) is None

    teacher = {"errors": 60, "rows": 10_000}

    def row(errors):
        return {"errors": errors}

    # per seed: gaps 80, 90, 70 errors; KD closes 60/80, 70/90, 50/70 of them
    clear = quality.errors_table(
        "t",
        teacher,
        {quality.ALONE: row([140, 150, 130]), "KD": row([80, 80, 80])},
        [0, 1, 2],
        paper=(67, 146, 74),
        paper_name="paper (MNIST)",
    )
    assert "| test errors of 10,000 (mean +- std) |" in clear and "paper (MNIST) |" in clear
    assert "| teacher (trained once) | 60 | - | 99.40% | - | 67 |" in clear
    assert "| student alone | 140.0 +- 10.0 | 140, 150, 130 | 98.60% | - | 146 |" in clear
    assert "| KD | 80.0 +- 0.0 | 80, 80, 80 | 99.20% | 75 +- 3% | 74 (91% closed) |" in clear
    assert "KD: +60.0 errors" in clear and "it closes at least half the gap" in clear

    # a gain inside the spread earns no claim, even where its mean share is above half
    noisy = quality.errors_table(
        "t", teacher, {quality.ALONE: row([100, 180]), "KD": row([70, 120])}, [0, 1]
    )
    assert "does NOT beat the student alone" in noisy and "at least half the gap" not in noisy
    # a clear gain that closes under half the gap says so
    small = quality.errors_table(
        "t", teacher, {quality.ALONE: row([140, 140]), "KD": row([120, 122])}, [0, 1]
    )
    assert "does NOT close at least half the gap" in small
    # clearly more errors than the student alone is said as such (the full-size Hinton run)
    worse = quality.errors_table(
        "t", teacher, {quality.ALONE: row([1104, 1094, 1083]), "KD": row([1138, 1141, 1144])},
        [0, 1, 2],
    )  # fmt: skip
    assert "KD: -47.3 errors" in worse and "is WORSE than the student alone" in worse
