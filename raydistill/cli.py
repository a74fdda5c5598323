"""The ``raydistill`` command line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from raydistill.config import JobConfig, JobError, load_job

_set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a job field, e.g. --set train.epochs=3 (repeatable; value parsed as YAML).",
)
_fresh_option = click.option(
    "--fresh", is_flag=True, help="Start over: delete this job's run directory first."
)
_changes_options = [
    click.option(
        "--fresh-stage",
        "fresh_stages",
        multiple=True,
        type=click.Choice(["teacher", "student", "baseline"]),
        help="Retrain this stage (and those trained from it: the teacher's student); the "
        "others are kept. Repeatable.",
    ),
    click.option(
        "--allow-changed",
        is_flag=True,
        help="Keep stages trained with other settings than the job's now: a finished stage is "
        "reused as trained, an unfinished one resumes and trains on with the new settings.",
    ),
]


def _verbose(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``-v``: Ray's own output on the terminal too; without it Ray's warnings and INFO lines
    go to the run directory's ray.log and the terminal shows raydistill's lines only."""

    @click.option(
        "-v",
        "--verbose",
        is_flag=True,
        help="Show Ray's own log lines (warnings, INFO) here too; by default they go to the "
        "run directory's ray.log.",
    )
    @wraps(fn)
    def wrapper(*args: Any, verbose: bool, **kwargs: Any) -> Any:
        from raydistill.console import configure

        configure(quiet=not verbose)
        try:
            return fn(*args, **kwargs)
        finally:
            configure(quiet=False)

    return wrapper


def _changes(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_changes_options):
        fn = option(fn)
    return fn


def _load(job_file: str, overrides: tuple[str, ...], **updates: Any) -> JobConfig:
    overrides = overrides + tuple(f"{k}={v}" for k, v in updates.items())
    return load_job(job_file, overrides)


def _clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input ends in one clear message and exit code 2, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JobError as exc:
            click.echo(f"error: {_own_error(exc)}", err=True)
            sys.exit(2)

    return wrapper


def _own_error(exc: JobError) -> JobError:
    """The JobError a Ray task raised, not Ray's wrapper of it: a bad row found by a read task
    reaches the driver as a ``RayTaskError`` that is also a JobError, whose message starts with
    the task's name and traceback."""
    while isinstance(getattr(exc, "cause", None), JobError) and exc.cause is not exc:
        exc = exc.cause
    return exc


@click.group()
@click.version_option(package_name="raydistill")
def main() -> None:
    """Knowledge distillation on Ray: one YAML job from a laptop to a GPU cluster."""


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@_set_option
@click.option(
    "--cluster",
    "clusters",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Also check that the job's actors and workers fit a node type of this cluster config "
    "(Ray launcher YAML or KubeRay manifest; repeatable).",
)
@_clean_errors
def validate(job_file: str, overrides: tuple[str, ...], clusters: tuple[str, ...]) -> None:
    """Check a job and print it fully resolved (every default filled in)."""
    job = _load(job_file, overrides)
    problems = _named_models_missing(job)
    from raydistill.remote import remote_run

    if (remote := remote_run(job)) is not None:
        remote.check_writable()  # a missing bucket or bad credentials: one line
    if clusters:
        from raydistill.cluster import load_node_types, unplaceable

        for config in clusters:
            problems += [f"{config}: {p}" for p in unplaceable(job, load_node_types(config))]
    if problems:
        raise JobError("\n".join(problems))
    click.echo(job.to_yaml(), nl=False)
    from raydistill.data.plan import plan_splits, streams

    if streams(job.data):  # planned from the listing and label column: no input is read
        from raydistill.data.stream import describe_streamed

        click.echo(f"# data: {describe_streamed(plan_splits(job.data))}", err=True)
    from raydistill.remote import temporary_output_warning

    if (warning := temporary_output_warning(job)) is not None:
        click.echo(warning, err=True)
    fit = f"; it fits {', '.join(clusters)}" if clusters else ""
    where = remote.uri if remote is not None else job.run_dir
    click.echo(f"# ok: {job_file} is a valid job; runs go to {where}{fit}", err=True)


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@_set_option
@_fresh_option
@_changes
@_verbose
@_clean_errors
def teacher(
    job_file: str,
    overrides: tuple[str, ...],
    fresh: bool,
    fresh_stages: tuple[str, ...],
    allow_changed: bool,
) -> None:
    """Train the job's teacher (when it has no checkpoint) and save it in the run directory."""
    from raydistill.pipeline import run_teacher

    path = run_teacher(
        _load(job_file, overrides),
        fresh=fresh,
        log=click.echo,
        fresh_stages=fresh_stages,
        allow_changed=allow_changed,
    )
    click.echo(f"teacher weights: {path}")


def _named_models_missing(job: JobConfig) -> list[str]:
    """``raydistill.*`` factories and ``timm:`` names the job names that do not exist
    (raydistill's own modules and timm's registry are safe to look in; a user's
    ``module:factory`` is checked only when a command builds it)."""
    from raydistill.models.specs import resolve_builder

    problems = []
    for side in ("teacher", "student"):
        spec = getattr(job, side).model
        if spec.startswith(("raydistill.", "timm:")):
            try:
                resolve_builder(spec)
            except JobError as exc:
                problems.append(f"{side}.model: {exc}")
    return problems


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@_set_option
@click.option("--fresh", is_flag=True, help="Rebuild the cache even if a valid one exists.")
@_verbose
@_clean_errors
def cache(job_file: str, overrides: tuple[str, ...], fresh: bool) -> None:
    """Run the teacher once and write its outputs as a Parquet cache that train reads
    (with distill.teacher_pass: cache)."""
    from raydistill.pipeline import run_cache

    manifest = run_cache(_load(job_file, overrides), fresh=fresh, log=click.echo)
    click.echo(
        f"cache: {manifest['teacher_forward_passes']} rows, "
        f"{manifest['logit_bytes_per_sample']} B/sample of logits ({manifest['key']['codec']})"
    )


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@_set_option
@_fresh_option
@click.option(
    "--baseline", is_flag=True, help="Train the student alone, without a teacher (the baseline)."
)
@_changes
@_verbose
@_clean_errors
def train(
    job_file: str,
    overrides: tuple[str, ...],
    fresh: bool,
    baseline: bool,
    fresh_stages: tuple[str, ...],
    allow_changed: bool,
) -> None:
    """Distil the teacher into the student (training the teacher first if needed)."""
    from raydistill.pipeline import run_job

    updates = {"distill.enabled": "false"} if baseline else {}
    summary = run_job(
        _load(job_file, overrides, **updates),
        fresh=fresh,
        log=click.echo,
        fresh_stages=fresh_stages,
        allow_changed=allow_changed,
    )
    click.echo("")
    click.echo(summary.table())
    click.echo(f"\nrun directory: {summary.run_dir}")


@main.command("make-coco")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--train", "train_images", default=200, show_default=True, help="Training images.")
@click.option("--val", "val_images", default=50, show_default=True, help="Validation images.")
@click.option("--size", default=96, show_default=True, help="Image side in pixels.")
@click.option("--seed", default=0, show_default=True)
def make_coco(directory: str, train_images: int, val_images: int, size: int, seed: int) -> None:
    """Draw a small COCO-format detection dataset (3 shape classes on textured backgrounds)
    into DIRECTORY: train/, val/ and their instances JSON files, for trying detection jobs."""
    from raydistill.detection.synthetic import write_shapes_coco

    for split, (images, instances) in write_shapes_coco(
        directory, train_images, val_images, size, seed
    ).items():
        click.echo(f"{split}: images {images}, annotations {instances}")


@main.command("make-captions")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True)
def make_captions(directory: str, seed: int) -> None:
    """Write paired image/text rows (digits with generated captions) and a small text
    student's config and tokenizer into DIRECTORY, for trying cross-modal jobs."""
    from pathlib import Path

    from raydistill.data.captions import write_captions

    out = write_captions(Path(directory), seed)
    click.echo(f"rows: {out / 'captions.parquet'}; text student: {out / 'text-student'}")


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@_set_option
@click.option("--resume", is_flag=True, help="Continue an interrupted search of this job.")
@click.option(
    "--fresh", is_flag=True, help="Delete this job's earlier search first (teacher and cache kept)."
)
@_verbose
@_clean_errors
def tune(job_file: str, overrides: tuple[str, ...], resume: bool, fresh: bool) -> None:
    """Search the job's tune.space with Ray Tune; every trial reads one teacher pass."""
    from raydistill.distill.schedules import as_schedule
    from raydistill.tune.search import run_tune

    if resume and fresh:
        raise click.UsageError("--resume and --fresh contradict each other")
    summary = run_tune(_load(job_file, overrides), resume=resume, fresh=fresh, log=click.echo)
    click.echo("")
    click.echo(summary.table())
    click.echo(
        f"\nbest: {summary.best.trial_id} {summary.metric} {summary.best.best_value:.4f} "
        f"({', '.join(f'{k}={v}' for k, v in summary.best_params.items())})"
    )
    click.echo(
        f"teacher forward passes: {summary.teacher_forward_passes} for {len(summary.rows)} "
        f"trials ({'cache built by this run' if summary.cache_built else 'cache reused'})"
    )
    for key, schedule in summary.discovered.items():
        click.echo(f"discovered by pbt: {key} = {as_schedule(schedule).describe()}")
    click.echo(f"best job: {summary.best_job}  (run it: raydistill train {summary.best_job})")
    click.echo(f"results: {summary.tune_dir}")


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@_set_option
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Weights file to score.")
@click.option("--split", default="test", show_default=True, help="train, val or test.")
@click.option(
    "--model",
    type=click.Choice(["student", "teacher"]),
    default="student",
    show_default=True,
    help="Which of the job's architectures the weights belong to.",
)
@_clean_errors
def evaluate(
    job_file: str, overrides: tuple[str, ...], checkpoint: str | None, split: str, model: str
) -> None:
    """Score a checkpoint (default: the run's student) on a split: the task's figure (accuracy,
    mAP; a causal LM's perplexity and next-token agreement with the teacher), a classifier's
    expected calibration error, size, latency."""
    from pathlib import Path

    from raydistill.pipeline import evaluate_checkpoint
    from raydistill.tasks import get_task

    job = _load(job_file, overrides)
    from raydistill.remote import remote_run

    if (remote := remote_run(job)) is not None and checkpoint is None:
        remote.pull_for_reading()  # the run's weights, from its storage URI
    result = evaluate_checkpoint(job, Path(checkpoint) if checkpoint else None, split, model)
    click.echo(get_task(job).score_line(result))


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@_clean_errors
def report(run_dir: str) -> None:
    """Write report.md and report.html (comparison table, curves, schedules, per-class
    accuracy, calibration, tune results, the resolved job) for a run directory (or a run at
    a storage URI: s3://bucket/prefix/name)."""
    from raydistill.remote import fetch_run
    from raydistill.report import write_report
    from raydistill.rundir import PLOTS_DIR, REPORT_HTML, REPORT_MD

    local, remote = fetch_run(run_dir)
    files = write_report(local)
    click.echo(f"report: {files.markdown}")
    click.echo(f"report: {files.html} ({len(files.plots)} plots embedded)")
    if remote is not None:
        remote.push(REPORT_MD, REPORT_HTML, *([PLOTS_DIR] if files.plots else []))
        click.echo(f"report: uploaded to {remote.uri}")


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["torchscript", "onnx", "safetensors", "hf"]),
    required=True,
    help="torchscript (torch.jit.load), onnx (onnxruntime), safetensors (weights + spec), "
    "hf (Hugging Face students only).",
)
@click.option(
    "--stage",
    type=click.Choice(["student", "baseline", "teacher"]),
    default="student",
    show_default=True,
    help="Which of the run's models to export.",
)
@click.option(
    "--output", "-o", type=click.Path(), help="Where to write (default: RUN_DIR/export/)."
)
@_clean_errors
def export(run_dir: str, fmt: str, stage: str, output: str | None) -> None:
    """Write a run's trained student (or --stage) in a deployable format, checked by loading
    it back. RUN_DIR may be a run at a storage URI (s3://bucket/prefix/name): it is read from
    there, and without --output the export is uploaded to its export/."""
    from pathlib import Path

    from raydistill.export import export_run
    from raydistill.remote import fetch_run

    local, remote = fetch_run(run_dir)
    result = export_run(local, fmt, stage, output)  # type: ignore[arg-type]
    check = (
        f"max |logit difference| vs PyTorch {result.max_abs_diff:.2e}"
        if result.max_abs_diff == result.max_abs_diff
        else "not reloaded"
    )
    click.echo(f"{result.stage} -> {result.path} ({result.size_bytes:,} bytes, {fmt}; {check})")
    if remote is not None and output is None:
        remote.push(Path(result.path).resolve().relative_to(local).as_posix())
        click.echo(f"{result.stage}: uploaded to {remote.uri}")


@main.command("check-teacher")
@click.argument("job_file", type=click.Path(dir_okay=False))
@_set_option
@click.option("--split", default="val", show_default=True, help="Split the teacher is scored on.")
@click.option("--strict", is_flag=True, help="Exit with code 1 when a rule of thumb is broken.")
@_clean_errors
def check_teacher_command(
    job_file: str, overrides: tuple[str, ...], split: str, strict: bool
) -> None:
    """Before training a student: the teacher's accuracy against student.target, its inference
    cost against the student's, and the feature layers' shapes and adapters."""
    from raydistill.check import check_teacher

    result = check_teacher(_load(job_file, overrides), split)
    for line in result.lines():
        click.echo(line, err=line.startswith(("warning:", "error:")))
    if result.problems:
        sys.exit(2)
    if strict and result.warnings:
        sys.exit(1)
    click.echo("ok" if not result.warnings else f"{len(result.warnings)} warning(s)")


if __name__ == "__main__":
    main()
