"""Progress lines of long teacher passes and cache builds (Ray-free): rows done of the total, the
rate, the ETA, throttled like the epoch loop's lines; and the cache's write stage on its own."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydistill import progress as progress_module
from raydistill.progress import RowProgress, Throttle, eta_text, rate_text
from raydistill.teacher.parquet_files import file_name, write_block


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rate_and_eta_read_as_the_epoch_lines_do():
    assert rate_text(960, 2.0, "rows") == "480 rows/s"
    assert eta_text(2.01) == "eta 3s" and eta_text(0) == "eta 0s" and eta_text(-1) == "eta 0s"


def test_a_row_progress_line_once_the_interval_has_passed_with_rate_and_eta():
    clock, lines = Clock(), []
    progress = RowProgress("teacher", "labelled", 1000, lines.append, every_s=30, clock=clock)
    for _ in range(29):  # 10 rows a second: no line before 30 s
        clock.now += 1
        progress.add(10)
    assert lines == []
    clock.now += 1
    progress.add(10)  # 300 rows in 30 s: 700 left at 10 rows/s
    assert lines == ["[teacher] labelled 300/1000 rows, 10 rows/s, eta 70s"]
    clock.now += 29
    progress.add(290)
    assert len(lines) == 1  # the next line is due 30 s after the last
    clock.now += 1
    progress.add(410)
    assert lines[-1] == "[teacher] labelled 1000/1000 rows, 17 rows/s, eta 0s"
    assert progress.done == 1000


def test_a_short_pass_prints_nothing_and_an_unknown_total_has_no_eta():
    clock, lines = Clock(), []
    short = RowProgress("cache", "labelled and written", 500, lines.append, clock=clock)
    clock.now += 5
    short.add(500)
    assert lines == []  # the default interval is the epoch loop's 30 s
    unknown = RowProgress("cache", "labelled and written", None, lines.append, 0, clock)
    clock.now += 2
    unknown.add(64)
    assert lines == ["[cache] labelled and written 64 rows, 32 rows/s"]


def test_the_interval_is_read_when_the_progress_is_made(monkeypatch):
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    progress = RowProgress("teacher", "labelled", 2, lines.append)
    progress.add(1)
    progress.add(1)
    assert [line.split(",")[0] for line in lines] == [
        "[teacher] labelled 1/2 rows",
        "[teacher] labelled 2/2 rows",
    ]
    assert Throttle().every_s == 0.0


def test_rows_counted_from_several_threads_add_up():
    progress = RowProgress("teacher", "labelled", 40_000, lambda _: None, every_s=0)

    def count() -> None:
        for _ in range(5000):
            progress.add(2)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert progress.done == 40_000


def _block(ids: range, view: int | None = None) -> pa.Table:
    columns = {"row_id": np.array(ids, dtype=np.int64), "label": np.array(ids) % 10}
    if view is not None:
        columns["view"] = np.full(len(ids), view)
    return pa.table(columns)


def test_the_write_stage_writes_one_file_per_block_named_by_its_rows(tmp_path):
    assert write_block(_block(range(0, 50)), str(tmp_path)) == {"rows": np.array([50])}
    files = sorted(tmp_path.iterdir())
    assert [f.suffix for f in files] == [".parquet"]  # no partial file left beside it
    assert pq.read_table(files[0]).equals(_block(range(0, 50)))
    # a retried write of the same block replaces its file, never adds a second copy
    write_block(_block(range(0, 50)), str(tmp_path))
    assert sorted(tmp_path.iterdir()) == files
    # another block, or the same rows in another augmented view, is a file of its own
    names = {file_name(_block(range(50, 100))), file_name(_block(range(0, 50), view=1))}
    assert len(names | {files[0].name}) == 3
    assert write_block(_block(range(0)), str(tmp_path))["rows"].tolist() == [0]
    assert sorted(tmp_path.iterdir()) == files  # an empty block writes nothing


@pytest.mark.parametrize("keys", [["a", "b"], ["b", "a"]])
def test_string_row_keys_name_a_file_by_their_text(keys):
    table = pa.table({"row_id": keys})
    assert file_name(table) == file_name(pa.table({"row_id": list(keys)}))
