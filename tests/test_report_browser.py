"""``report.html`` of a finished run as a browser shows it: headless Chromium (Debian's
``chromium``, driven by Playwright without a browser download of its own).

``scripts/test.sh`` installs the browser when it is missing and apt is there; without it this
test fails, naming the browser (it never skips: CI must not pass without looking at the page).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from raydistill.evaluate import ECE_BINS
from raydistill.pipeline import summarize_run
from raydistill.report import write_report

BROWSER = Path(os.environ.get("RAYDISTILL_CHROMIUM", "/usr/bin/chromium"))
VIEWPORT = {"width": 1200, "height": 900}

# What the page holds, read in the browser: every image's load state and the mean of its
# decoded RGBA values (0-255: a truncated PNG still loads, with its lower part empty), every
# table's cells.
_PAGE_STATE = """() => {
  const mean = (img) => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    let sum = 0;
    for (let i = 0; i < data.length; i++) sum += data[i];
    return data.length ? sum / data.length : 0;
  };
  return {
    images: Array.from(document.images).map(i => ({
      alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight,
      mean: i.naturalWidth ? mean(i) : 0})),
    tables: Array.from(document.querySelectorAll('table')).map(t =>
      Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.textContent.trim()))),
  };
}"""


def _browser_path() -> str:
    if not BROWSER.is_file():
        pytest.fail(
            f"headless browser missing: no Chromium at {BROWSER} (apt-get install -y chromium; "
            "scripts/test.sh installs it when apt is available; RAYDISTILL_CHROMIUM names "
            "another binary)",
            pytrace=False,
        )
    return str(BROWSER)


def _table(tables: list[list[list[str]]], header: list[str]) -> list[list[str]]:
    """The rows (header first) of the table whose header row is ``header``."""
    found = [t for t in tables if t and t[0] == header]
    assert len(found) == 1, (header, [t[0] for t in tables if t])
    return found[0]


def _png_pixels(path: Path):
    import matplotlib.image

    return matplotlib.image.imread(path)  # [H, W, channels] floats in [0, 1]


def test_report_html_renders_in_chromium_with_its_images_and_tables(tiny_run, tmp_path):
    from playwright.sync_api import sync_playwright

    executable = _browser_path()
    run_dir = tmp_path / tiny_run.run_dir.name
    shutil.copytree(tiny_run.run_dir, run_dir, ignore=shutil.ignore_patterns("report*"))
    _, summary = summarize_run(run_dir)
    files = write_report(run_dir, summary)
    shot = tmp_path / "report.png"
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(files.html.as_uri(), wait_until="load")
            state = page.evaluate(_PAGE_STATE)
            title = page.title()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()

    assert errors == []
    assert title == f"raydistill report: {run_dir.name}"
    # every plot the report drew is on the page, loaded and decoded
    assert len(state["images"]) == len(files.plots) == 4, state["images"]
    for image, plot in zip(state["images"], files.plots, strict=True):
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
        # the plot file as drawn, decoded here: the same size, and the browser shows all of it
        drawn = _png_pixels(plot)
        assert (image["height"], image["width"]) == drawn.shape[:2], (image, plot)
        assert image["mean"] == pytest.approx(255 * drawn.mean(), abs=1.0), (image, plot)

    # the results table with the header RunSummary gives it, one row per scored model
    comparison = summary.comparison(detailed=True)
    results = _table(state["tables"], comparison.header)
    assert results[1:] == comparison.rows
    assert [row[0] for row in results[1:]] == [s.name for s in summary.scores]
    # the calibration table: each model's ECE as scored
    header = ["model", f"ECE ({ECE_BINS} bins)", "mean confidence", "test accuracy"]
    calibration = _table(state["tables"], [*header, "overconfidence (points)"])
    assert [row[:2] for row in calibration[1:]] == [
        [s.name, f"{100 * s.ece:.2f}%"] for s in summary.scores
    ]

    # the screenshot: a PNG of the whole page (taller than the window), not a blank one
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    pixels = _png_pixels(shot)
    assert pixels.shape[1] == VIEWPORT["width"] and pixels.shape[0] > 2 * VIEWPORT["height"]
    ink = (pixels[..., :3] < 0.9).any(-1).mean()  # share of pixels that are not near-white
    assert 0.02 < ink < 0.9, ink
