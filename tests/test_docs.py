"""The documentation stays true to the code: the generated job reference matches the schema,
links resolve, the README stays short and names every command, and no file points outside the
repository. Ray-free."""

from __future__ import annotations

import difflib
import re
import subprocess
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from raydistill.config import JobConfig
from raydistill.reference import REFERENCE_FILE, job_reference, main, render_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
README_MAX_LINES = 210  # the developers' guide: about 200


def test_the_job_reference_in_docs_matches_the_schema():
    written = REFERENCE_FILE.read_text(encoding="utf-8")
    generated = job_reference()
    diff = "".join(
        list(
            difflib.unified_diff(
                written.splitlines(keepends=True),
                generated.splitlines(keepends=True),
                "docs/job-reference.md",
                "generated",
            )
        )[:40]
    )
    assert written == generated, (
        f"docs/job-reference.md differs from the schema; run `python -m raydistill.reference "
        f"--write`:\n{diff}"
    )


def _section(text: str, path: str, variant: str = "") -> str:
    """The text under the heading for key ``path`` (up to the next heading)."""
    title = f"`{path}`" + (f" with `{variant}`" if variant else "")
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert match, f"no section {title} in the job reference"
    return match.group(1)


def _keys(section: str) -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", section, re.M)


def _model_at(path: str) -> type[BaseModel]:
    model: Any = JobConfig
    for name in path.replace("[]", "").split("."):
        annotation = model.model_fields[name].annotation
        candidates = [annotation, *typing.get_args(annotation)]
        candidates += [a for c in list(candidates) for a in typing.get_args(c)]
        model = next(c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel))
    return model


@pytest.mark.parametrize(
    "path",
    [
        "data",
        "data.split",
        "data.coco",
        "teacher",
        "distill",
        "distill.dkd",
        "train",
        "train.early_stopping",
        "scaling",
        "scaling.teacher_pool",
        "cache",
        "output",
        "tune",
    ],
)
def test_the_reference_lists_every_key_of_each_section_in_schema_order(path):
    assert _keys(_section(job_reference(), path)) == list(_model_at(path).model_fields)


def test_the_reference_carries_the_schema_descriptions_defaults_and_bounds():
    text = job_reference()
    scaling = _section(text, "scaling")
    described = JobConfig.model_fields["task"].description
    assert described and described in text
    row = "| `max_failures` | integer | `0` | >= -1 | worker failures survived; -1: unlimited |"
    assert row in scaling
    hflip = _section(text, "data.augment.ops[]", "op: hflip")
    assert _keys(hflip) == ["op", "p"]
    assert "| `p` | number | `0.5` | >= 0, <= 1 |  |" in hflip


class _Leaf(BaseModel):
    """A leaf with ``code`` in its docstring.

    An example::

        leaf: {size: 2}
    """

    model_config = ConfigDict(extra="forbid")
    size: int = Field(1, ge=1, lt=10, description="how big | in units")


class _Cat(BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int = 9


class _Dog(BaseModel):
    """A dog."""

    kind: Literal["dog"] = "dog"


class _Root(BaseModel):
    """The root."""

    name: str = Field(..., description="required name")
    mode: Literal["a", "b"] = "a"
    leaf: _Leaf = Field(default_factory=_Leaf)
    other: _Leaf | None = None
    pets: list[Annotated[_Cat | _Dog, Field(discriminator="kind")]] = Field(default_factory=list)


def test_a_small_schema_renders_sections_tables_and_literal_blocks():
    text = render_reference(_Root, "# Title\n")
    assert text.startswith("# Title\n\n## Top level\n\nThe root.\n")
    assert "| `name` | string | required |  | required name |" in text
    assert "| `mode` | a \\| b | `a` |  |  |" in text
    assert "| `leaf` | mapping (keys below) | (keys below) |  |  |" in text
    assert "| `other` | mapping (keys below) \\| null | `null` |  |  |" in text
    assert "| `pets` | list of mapping (keys below) | `[]` |  |  |" in text
    leaf = _section(text, "leaf")
    assert "A leaf with `code` in its docstring." in leaf
    assert "An example:\n\n```yaml\nleaf: {size: 2}\n```" in leaf
    assert "| `size` | integer | `1` | >= 1, < 10 | how big \\| in units |" in leaf
    assert _section(text, "other").strip() == "The same keys as `leaf`."
    assert _keys(_section(text, "pets[]", "kind: cat")) == ["kind", "lives"]
    assert "A dog." in _section(text, "pets[]", "kind: dog")


def test_check_fails_on_a_stale_file_and_passes_after_write(tmp_path, capsys):
    target = tmp_path / "reference.md"
    assert main(["--check", "--file", str(target)]) == 1
    assert main(["--write", "--file", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == job_reference()
    assert main(["--check", "--file", str(target)]) == 0
    target.write_text(job_reference().replace("worker failures survived", "failures"))
    assert main(["--check", "--file", str(target)]) == 1
    assert "stale" in capsys.readouterr().out


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_in_the_repository(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        where = f"{doc.relative_to(ROOT)} links {target}"
        assert linked.exists(), f"{where}: no such file"
        assert linked.is_relative_to(ROOT), f"{where}: outside the repository"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{where}: no heading with that anchor"


def test_the_docs_the_readme_promises_exist():
    for page in (
        "job-reference",
        "running",
        "tuning",
        "cluster",
        "python-api",
        "benchmarks",
        "faults-and-safety",
        "tasks/classification",
        "tasks/detection",
        "tasks/cross-modal",
    ):
        assert (ROOT / "docs" / f"{page}.md").is_file(), page


def test_the_readme_is_short_and_names_every_command():
    from raydistill.cli import main as cli

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to docs/"
    missing = [name for name in cli.commands if f"raydistill {name}" not in readme]
    assert not missing, f"README.md's CLI map lacks {missing}"


def test_the_readme_shows_the_table_the_quickstart_prints():
    from raydistill import RunSummary

    header = RunSummary(ROOT).table().splitlines()[:2]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n".join(header) in readme


def _repository_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        # not a git checkout (an unpacked copy): every file but the usual generated folders
        top = {".git", ".venv", "runs", "data"}  # the ignored folders at the root
        cache = {"__pycache__", ".pytest_cache", ".ruff_cache"}
        return [
            p
            for p in ROOT.rglob("*")
            if p.is_file()
            and p.relative_to(ROOT).parts[0] not in top
            and not cache & set(p.relative_to(ROOT).parts)
        ]
    return [ROOT / name for name in out.decode().split("\0") if name]


# Built from parts so that this file does not match itself.
OUTSIDE = ("../" + "shared", "ray-" + "notes")


def test_no_file_in_the_repository_points_outside_it():
    found = []
    for path in _repository_files():
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if any(needle in line for needle in OUTSIDE):
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not found, "files point outside the repository:\n" + "\n".join(found)
