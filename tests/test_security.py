"""Nothing a user hands raydistill runs code it did not name (issue #8, item 6).

Checkpoints are read with ``weights_only=True``, model specs import only the module they name,
YAML is read with safe loading (jobs, overrides, cluster configs), tune spaces are parsed, not
evaluated, and dashboards listen on loopback unless a file says why not. Every test that feeds
in a payload also checks that the payload's side effect (a marker file) did not happen. Ray-free.
"""

from __future__ import annotations

import ast
import functools
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from raydistill.cli import main
from raydistill.config import JobError, ModelSpec, load_job
from raydistill.models import build_model, load_weights, save_weights

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_SOURCES = sorted((ROOT / "raydistill").rglob("*.py"))
CODE = [*PACKAGE_SOURCES, *sorted((ROOT / "benchmarks").glob("*.py"))]

# Parses the files named on its command line and writes their trees, pickled, to stdout.
_PARSE_ALL = (
    "import ast, pickle, sys; sys.stdout.buffer.write(pickle.dumps("
    "{p: ast.parse(open(p, encoding='utf-8').read(), p) for p in sys.argv[1:]}))"
)


@functools.cache
def _code_trees() -> dict[Path, ast.Module]:
    """The syntax tree of every file in ``CODE``, parsed in a child interpreter.

    Not ``ast.parse`` here: CPython up to 3.11.7 (and 3.12.1) keeps ast.parse's recursion
    counter in interpreter-wide state (python/cpython#106905), so a parse in this process fails
    with "SystemError: AST constructor recursion depth mismatch" whenever another thread builds
    a tree meanwhile. By the time these tests run, the session's Ray has left threads here (its
    gc.collect() thread, log and error listeners), and on 3.11 formatting any traceback, as
    pytest does for an exception a finalizer raises in such a thread, calls ast.parse. The
    child has no other thread; rebuilding the trees from the pickle never touches that counter.
    """
    out = subprocess.run(
        [sys.executable, "-c", _PARSE_ALL, *map(str, CODE)], capture_output=True, check=True
    ).stdout
    return {Path(name): tree for name, tree in pickle.loads(out).items()}


def _tracked_text_files() -> list[Path]:
    """The repository's files as git sees them (tests and binaries left out)."""
    names = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    files = []
    for name in names:
        path = ROOT / name
        if name.startswith("tests/") or not path.is_file():
            continue
        try:
            path.read_text()
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


class _Payload:
    """Unpickling this creates ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _job_file(tmp_path: Path, changes: dict) -> Path:
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
    raw["output"] = {"storage_path": str(tmp_path / "runs")}
    for key, value in changes.items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


# ---------------------------------------------------------------- checkpoints


@pytest.fixture
def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A weights file shaped like ours whose unpickling would create a marker file."""
    marker = tmp_path / "code-ran"
    spec = ModelSpec(model="raydistill.models.zoo:digits_cnn", args={"width": 32})
    state = build_model(spec, 10, load=False).state_dict()
    path = tmp_path / "evil.pt"
    blob = {"format": "raydistill.weights/1", "meta": _Payload(marker), "model": state}
    torch.save(blob, path, pickle_module=pickle)
    # the payload is live: a plain unpickle really would run it
    assert not marker.exists()
    return path, marker


def test_the_payload_would_run_under_a_plain_load(evil_checkpoint):
    path, marker = evil_checkpoint
    torch.load(path, weights_only=False)
    assert marker.exists()  # so the refusals below are refusals of real code


def test_a_checkpoint_carrying_code_is_refused_and_the_code_does_not_run(evil_checkpoint):
    path, marker = evil_checkpoint
    spec = ModelSpec(model="raydistill.models.zoo:digits_cnn", args={"width": 32})
    with pytest.raises(JobError, match="cannot be read safely: it holds more than tensors") as err:
        load_weights(build_model(spec, 10, load=False), path)
    assert "\n" not in str(err.value) and "weights_only=False" not in str(err.value)
    assert not marker.exists()


def test_the_cli_refuses_it_as_a_teacher_checkpoint(evil_checkpoint, tmp_path, monkeypatch):
    import raydistill.pipeline

    path, marker = evil_checkpoint
    monkeypatch.setattr(raydistill.pipeline, "ray_session", None)  # refused before Ray
    job = _job_file(tmp_path, {"teacher.checkpoint": str(path)})
    result = CliRunner().invoke(main, ["train", str(job)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: checkpoint {path} cannot be read safely")
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_a_train_checkpoint_carrying_code_is_never_resumed_from(tmp_path):
    """Ray Train checkpoints (state.pt) are read with weights_only too; the resume scan skips
    one it cannot read safely and takes the older, clean one."""
    from raydistill.train.stage import latest_checkpoint
    from raydistill.train.state import STATE_FILE, load_state, save_state

    marker = tmp_path / "code-ran"
    clean, evil = tmp_path / "checkpoint_000000", tmp_path / "checkpoint_000001"
    clean.mkdir()
    evil.mkdir()
    save_state(clean, {"epoch": 0, "history": []})
    torch.save({"epoch": 1, "history": [_Payload(marker)]}, evil / STATE_FILE)
    with pytest.raises(pickle.UnpicklingError):
        load_state(evil)
    assert latest_checkpoint(tmp_path) == clean
    assert not marker.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    """A static check, so a new ``torch.load`` cannot slip in without ``weights_only=True``."""
    calls = 0
    for path, tree in _code_trees().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("pickle.load", "pickle.loads", "torch.serialization.load", "dill.load"):
                pytest.fail(f"{path.name}:{node.lineno}: {name} unpickles untrusted files")
            if name == "torch.load":
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant), (path, node.lineno)
                assert kw["weights_only"].value is True, (path, node.lineno)
            if name in ("np.load", "numpy.load"):
                kw = {k.arg: k.value for k in node.keywords}
                assert ast.unparse(kw.get("allow_pickle", ast.Constant(False))) == "False", (
                    path,
                    node.lineno,
                )
    assert calls >= 2  # weights files and Train checkpoints: the check saw them


# ---------------------------------------------------------------- model specs


@pytest.fixture
def user_package(tmp_path: Path, monkeypatch) -> tuple[str, Path]:
    """A package with a models module and a sibling module whose import leaves a marker."""
    name = f"rdsec_{tmp_path.name.replace('-', '_')}"
    package = tmp_path / "site" / name
    package.mkdir(parents=True)
    marker = tmp_path / "sibling-imported"
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "from raydistill.models.zoo import mlp\n\ndef factory(num_classes=10):\n"
        "    return mlp(num_classes=num_classes)\n"
    )
    (package / "other.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield name, marker
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def test_a_spec_imports_only_the_module_it_names(user_package):
    name, marker = user_package
    model = build_model(ModelSpec(model=f"{name}.models:factory"), 10)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert f"{name}.models" in sys.modules
    assert f"{name}.other" not in sys.modules and not marker.exists()


def test_validating_a_job_imports_nothing_it_names(user_package, tmp_path):
    """``validate`` checks a spec's shape only: naming a module in YAML runs none of it."""
    name, marker = user_package
    job = _job_file(tmp_path, {"teacher.model": f"{name}.other:factory"})
    result = CliRunner().invoke(main, ["validate", str(job)])
    assert result.exit_code == 0, result.output
    assert f"{name}.other" not in sys.modules and not marker.exists()


@pytest.mark.parametrize(
    "spec",
    [
        "raydistill.models.zoo:mlp.__globals__",  # attribute paths are not followed
        "raydistill.models.zoo:no_such_factory",
        "raydistill.models.zoo:__name__",  # not callable
    ],
)
def test_a_spec_reaches_only_a_callable_named_in_the_module(spec):
    with pytest.raises(JobError, match="has no callable"):
        build_model(ModelSpec(model=spec), 10)


# ---------------------------------------------------------------- YAML


PYTHON_TAGS = [
    "!!python/object/apply:builtins.open [{marker}, w]",
    "!!python/object/new:builtins.open [{marker}, w]",
    "!!python/name:builtins.open",
]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_a_python_tag_in_a_job_is_refused_and_runs_nothing(tmp_path, tag):
    marker = tmp_path / "code-ran"
    text = (ROOT / "jobs" / "digits.yaml").read_text()
    text = text.replace("seed: 0\n", f"seed: {tag.format(marker=marker)}\n", 1)
    (tmp_path / "job.yaml").write_text(text)
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "job.yaml")])
    assert result.exit_code == 2
    assert "not valid YAML: line " in result.stderr
    assert "could not determine a constructor for the tag" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_a_python_tag_in_an_override_or_a_cluster_config_runs_nothing(tmp_path):
    from raydistill.cluster import load_node_types

    marker = tmp_path / "code-ran"
    tag = PYTHON_TAGS[0].format(marker=marker)
    with pytest.raises(JobError, match="value is not valid YAML"):
        load_job(ROOT / "jobs" / "digits.yaml", [f"seed={tag}"])
    config = tmp_path / "cluster.yaml"
    config.write_text(f"available_node_types: {tag}\n")
    with pytest.raises(JobError, match="cannot read cluster config"):
        load_node_types(config)
    assert not marker.exists()


def test_a_tune_space_is_parsed_never_evaluated(tmp_path):
    marker = tmp_path / "code-ran"
    payload = f"__import__('builtins').open({str(marker)!r}, 'w')"
    with pytest.raises(JobError, match=r"tune\.space\.temperature: unknown distribution"):
        load_job(
            ROOT / "jobs" / "digits-tune.yaml",
            [f'tune.space={{temperature: "{payload}"}}'],
        )
    assert not marker.exists()


def test_the_package_never_loads_yaml_unsafely_or_evaluates_strings():
    unsafe = {"yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "eval", "exec"}
    for path, tree in _code_trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                assert ast.unparse(node.func) not in unsafe, (path.name, node.lineno)


# ---------------------------------------------------------------- dashboards and secrets


def test_a_local_ray_binds_its_dashboard_to_loopback(monkeypatch):
    """The Ray ``raydistill`` starts for a job (no RAY_ADDRESS) serves its dashboard and Jobs
    API on 127.0.0.1 only."""
    import ray

    from raydistill.runtime import ray_session

    seen: dict = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with ray_session(load_job(ROOT / "jobs" / "digits.yaml")):
        pass
    assert seen["dashboard_host"] == "127.0.0.1"


def test_every_ray_init_keeps_the_dashboard_on_loopback():
    """In the package and the benchmarks: ``dashboard_host`` left at Ray's default (127.0.0.1)
    or set to loopback."""
    found = 0
    for path, tree in _code_trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "ray.init":
                found += 1
                kw = {k.arg: k.value for k in node.keywords}
                if "dashboard_host" in kw:
                    host = ast.unparse(kw["dashboard_host"])
                    assert host in ("'127.0.0.1'", "'localhost'"), (path.name, host)
    assert found >= 2


HOST = re.compile(r"(?:--dashboard-host[= ]|dashboard_host=|dashboard-host:\s*)[\"']?([\w.:-]+)")


@pytest.mark.parametrize("path", _tracked_text_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_binds_the_dashboard_to_loopback_unless_it_says_why(path):
    """Every dashboard host in the repository's files (configs, READMEs, scripts, jobs) is
    loopback; a file that binds another address explains it in a comment."""
    text = path.read_text()
    for host in HOST.findall(text):
        if host not in ("127.0.0.1", "localhost"):
            assert f"dashboard binds {host}" in text, (path.name, host)


def test_ray_start_without_a_dashboard_host_means_loopback():
    """Examples that leave ``--dashboard-host`` out rely on ``ray start``'s default being
    loopback; this pins that for the Ray version the package pins."""
    from ray.scripts.scripts import start

    (option,) = [p for p in start.params if p.name == "dashboard_host"]
    default = option.default() if callable(option.default) else option.default
    assert default in ("127.0.0.1", "localhost")


CREDENTIAL_KEYS = re.compile(
    r"^\s*(aws_access_key_id|aws_secret_access_key|aws_session_token|secret_access_key|"
    r"credentials|service_account_key|private_key|ssh_private_key|password|token|"
    r"RAY_AUTH_TOKEN)\s*:\s*\S",
    re.IGNORECASE | re.MULTILINE,
)


@pytest.mark.parametrize(
    "path",
    sorted(p for p in (ROOT / "cluster").rglob("*.yaml")),
    ids=lambda p: p.name,
)
def test_cluster_configs_take_credentials_from_the_provider_chain(path):
    """No credential is written in a cluster config: the launcher uses the local cloud profile
    (AWS) or application-default credentials (GCP); KubeRay makes the Ray token a Secret."""
    text = path.read_text()
    assert not CREDENTIAL_KEYS.search(text), (path.name, CREDENTIAL_KEYS.search(text))
    for doc in (d for d in yaml.safe_load_all(text) if d):
        provider = doc.get("provider") or {}
        assert not {k for k in provider if "key" in k or "cred" in k or "secret" in k}, provider
        auth = doc.get("auth") or {}
        assert "ssh_private_key" not in auth, auth


def test_the_credential_scan_catches_a_pasted_key():
    assert CREDENTIAL_KEYS.search("provider:\n  aws_secret_access_key: abc\n")
    assert CREDENTIAL_KEYS.search("auth:\n  ssh_private_key: ~/.ssh/id_rsa\n")
    assert not CREDENTIAL_KEYS.search("# the token comes from ~/.ray/auth_token\n")


def test_saved_weights_hold_only_tensors_and_plain_data(tmp_path):
    """What raydistill writes loads with ``weights_only=True``: no pickled objects in it."""
    spec = ModelSpec(model="raydistill.models.zoo:mlp")
    path = save_weights(build_model(spec, 10), tmp_path / "w.pt", {"role": "student", "epochs": 3})
    blob = torch.load(path, weights_only=True)
    assert blob["meta"] == {"role": "student", "epochs": 3}
