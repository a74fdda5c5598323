"""The cluster configs in cluster/ and the Dockerfile: they parse, pin the Ray the package pins,
offer every resource a job asks for, keep dashboards off public interfaces, hold no secrets.

Ray-free; the node types are read by :mod:`raydistill.cluster`, the same reader that
``raydistill validate JOB --cluster CONFIG`` uses.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from raydistill.cluster import fits, job_requests, load_node_types, node_types, unplaceable
from raydistill.config import JobError, ScalingConfig, load_job

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER = [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"]
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
WITH_NODE_TYPES = [*LAUNCHER, RAYCLUSTER]
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
TEXT_FILES = [*sorted(p for p in CLUSTER.rglob("*") if p.is_file()), ROOT / "Dockerfile"]


def _pins() -> dict[str, str]:
    """Package -> version pinned with == in pyproject.toml."""
    # A regex, not tomllib: the package supports Python 3.10, which has no tomllib.
    text = (ROOT / "pyproject.toml").read_text()
    found = re.findall(r'^\s*"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^";\s]+)"', text, re.M)
    return {name.lower(): version for name, version in found}


PINS = _pins()
RAY = PINS["ray"]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_pins_are_read():
    assert re.fullmatch(r"\d+\.\d+\.\d+", RAY)
    assert {"torch", "torchvision"} <= PINS.keys()


@pytest.mark.parametrize("path", sorted(CLUSTER.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs and all(isinstance(d, dict) for d in docs)


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_configs_have_the_node_groups(path):
    config = _load(path)
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu-data", "teacher-gpu", "student-gpu"}
    assert config["head_node_type"] == "head"
    assert types["head"]["resources"]["CPU"] == 0  # the head does no work
    for name in ("cpu-data", "teacher-gpu", "student-gpu"):
        t = types[name]
        assert 0 <= t["min_workers"] <= t["max_workers"], name
    assert types["teacher-gpu"]["resources"]["GPU"] >= 1
    assert types["teacher-gpu"]["resources"]["teacher"] >= 1
    assert types["student-gpu"]["resources"]["GPU"] >= 1
    assert types["student-gpu"]["resources"]["student"] >= 1
    assert "teacher" not in types["student-gpu"]["resources"]
    assert "student" not in types["teacher-gpu"]["resources"]
    assert config["idle_timeout_minutes"] > 0
    assert config["max_workers"] >= sum(t.get("max_workers", 0) for t in types.values()) > 0


def test_raycluster_autoscales_teacher_and_student_gpu_groups():
    spec = _load(RAYCLUSTER)["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-data", "teacher-gpu", "student-gpu"}
    for name, group in groups.items():
        assert 0 <= group["minReplicas"] <= group["maxReplicas"], name
    types = node_types(_load(RAYCLUSTER))
    for name, resource in (("teacher-gpu", "teacher"), ("student-gpu", "student")):
        limits = groups[name]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] >= 1, name
        assert types[name]["GPU"] == limits["nvidia.com/gpu"]
        assert types[name][resource] >= 1, name


def _gpu_group_bounds(path: Path) -> tuple[dict[str, tuple[int, int]], float]:
    """(min, max) nodes of the teacher and student groups, and the idle timeout in seconds."""
    config = _load(path)
    if path == RAYCLUSTER:
        groups = {g["groupName"]: g for g in config["spec"]["workerGroupSpecs"]}
        bounds = {n: (g["minReplicas"], g["maxReplicas"]) for n, g in groups.items()}
        idle = config["spec"]["autoscalerOptions"]["idleTimeoutSeconds"]
    else:
        types = config["available_node_types"]
        bounds = {n: (t.get("min_workers"), t.get("max_workers")) for n, t in types.items()}
        idle = config["idle_timeout_minutes"] * 60
    return {n: bounds[n] for n in ("teacher-gpu", "student-gpu")}, idle


def test_teacher_and_student_groups_match_across_the_cluster_configs():
    """One plan (benchmarks/cluster_plan.py) sizes every config alike: the same GPU group
    bounds and idle timeout everywhere, GPU groups that scale to zero, and per-node offers
    that match too."""
    (first, idle), *rest = [_gpu_group_bounds(p) for p in WITH_NODE_TYPES]
    assert all(other == (first, idle) for other in rest)
    assert all(low == 0 < high for low, high in first.values())
    assert 60 <= idle <= 1800  # long enough to ride out a pass, short enough to save GPU hours
    offers = [load_node_types(p) for p in WITH_NODE_TYPES]
    for name, resource in (("teacher-gpu", "teacher"), ("student-gpu", "student")):
        assert len({(o[name]["GPU"], o[name][resource]) for o in offers}) == 1, name


def test_rayjob_runs_the_coco_job_on_the_raycluster():
    job = _load(RAYJOB)
    assert job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].split()[:3] == ["raydistill", "train", "jobs/coco.yaml"]
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == _load(RAYCLUSTER)["metadata"]["name"]
    # The working directory it uploads is where the image puts the repository's jobs/.
    working_dir = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"]
    assert f"WORKDIR {working_dir}" in (ROOT / "Dockerfile").read_text()


def test_shared_storage_is_the_claim_every_pod_mounts():
    claim = _load(CLUSTER / "kuberay" / "shared-storage.yaml")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    spec = _load(RAYCLUSTER)["spec"]
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        volumes = group["template"]["spec"]["volumes"]
        claims = {v["persistentVolumeClaim"]["claimName"] for v in volumes}
        assert claims == {claim["metadata"]["name"]}


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: p.name)
def test_ray_and_torch_versions_match_pyproject(path):
    text = path.read_text()
    for tag in re.findall(r"rayproject/ray:([\w.-]+)", text):
        assert tag.startswith(f"{RAY}-"), (path.name, tag, RAY)
    for tag in re.findall(r"raydistill:([\w.-]+)", text):  # our image, built from the Dockerfile
        assert f"-ray{RAY}-" in tag, (path.name, tag, RAY)
    for package in ("ray", "torch", "torchvision"):
        for version in re.findall(rf"\b{package}(?:\[[^\]]*\])?==([\w.]+)", text):
            assert version == PINS[package], (path.name, package, version)
    if path == RAYCLUSTER:
        assert _load(path)["spec"]["rayVersion"] == RAY


def test_dockerfile_builds_on_the_pinned_official_image():
    text = (ROOT / "Dockerfile").read_text()
    assert f"ARG RAY_IMAGE=rayproject/ray:{RAY}-py311" in text
    assert "FROM ${RAY_IMAGE}" in text
    assert f"torch=={PINS['torch']} torchvision=={PINS['torchvision']}" in text
    assert "pip install --no-cache-dir ." in text


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_setup_installs_raydistill_at_the_pins(path):
    setup = " ".join(_load(path)["setup_commands"])
    assert f"torch=={PINS['torch']} torchvision=={PINS['torchvision']}" in setup
    assert "pip install --quiet /home/ray/raydistill" in setup


def _custom(raw: dict) -> set[str]:
    scaling = raw.get("scaling") or {}
    pool = scaling.get("teacher_pool") or {}
    return set(pool.get("resources") or {}) | set(scaling.get("resources_per_worker") or {})


def test_some_job_asks_for_the_custom_resources():
    asked = set().union(*(_custom(yaml.safe_load(p.read_text())) for p in JOBS))
    assert {"teacher", "student"} <= asked


@pytest.mark.parametrize("config", WITH_NODE_TYPES, ids=lambda p: p.name)
@pytest.mark.parametrize("job_file", JOBS, ids=lambda p: p.name)
def test_every_job_fits_every_cluster(config, job_file):
    types = load_node_types(config)
    offered = set().union(*(t.keys() for t in types.values()))
    raw = yaml.safe_load(job_file.read_text())
    assert _custom(raw) <= offered
    # The scaling section alone: loading the whole job would need its data on this machine.
    assert unplaceable(ScalingConfig.model_validate(raw.get("scaling") or {}), types) == []


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_dashboards_listen_on_loopback(path):
    config = _load(path)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    hosts = re.findall(
        r"--dashboard-host[= ](\S+)", head + " ".join(config["worker_start_ray_commands"])
    )
    assert hosts == ["127.0.0.1"]


def test_raycluster_dashboard_is_reachable_only_inside_kubernetes():
    """KubeRay needs the dashboard on the pod's address (its Service and the RayJob submitter
    reach it there); the file says so, and the Service stays ClusterIP."""
    head = _load(RAYCLUSTER)["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert head["serviceType"] == "ClusterIP"
    assert "dashboard binds 0.0.0.0" in RAYCLUSTER.read_text()


def test_ray_token_auth_is_on():
    assert _load(RAYCLUSTER)["spec"]["authOptions"]["mode"] == "token"
    for path in LAUNCHER:
        config = _load(path)
        for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
            assert "RAY_AUTH_MODE=token ray start" in command or command == "ray stop", command
        assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


SECRETS = [
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"aws_secret_access_key",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"\"private_key\"",  # a GCP service-account key file
    r"ssh_private_key\s*:",
    r"password\s*[:=]",
    r"RAY_AUTH_TOKEN\s*[:=]\s*\S",
    r"name:\s*RAY_AUTH_TOKEN\s*\n\s*value:",
    r"\b[0-9a-f]{32,}\b",  # a pasted token
]


@pytest.mark.parametrize("path", [*TEXT_FILES, *JOBS], ids=lambda p: p.name)
def test_no_credentials_in_files(path):
    text = path.read_text()
    for pattern in SECRETS:
        assert not re.search(pattern, text, re.IGNORECASE), (path.name, pattern)


def test_the_secret_scan_catches_a_pasted_key():
    pasted = "provider:\n  aws_secret_access_key: x\n  id: AKIAABCDEFGHIJKLMNOP\n"
    assert sum(bool(re.search(p, pasted, re.IGNORECASE)) for p in SECRETS) == 2


# raydistill.cluster on its own


def test_requests_mirror_what_ray_is_asked_for():
    job = load_job(ROOT / "jobs" / "digits-cluster.yaml")
    assert job_requests(job) == {
        "teacher actor": {"CPU": 2.0, "GPU": 1.0, "teacher": 1.0},
        "train worker": {"CPU": 4.0, "GPU": 1.0, "student": 1.0},
    }
    cpu = load_job(ROOT / "jobs" / "digits.yaml")
    assert job_requests(cpu) == {"teacher actor": {"CPU": 0.5}, "train worker": {"CPU": 1.0}}


def test_unplaceable_names_what_does_not_fit():
    job = load_job(
        ROOT / "jobs" / "digits-cluster.yaml", ["scaling.resources_per_worker.student=8"]
    )
    types = {"gpu": {"CPU": 64, "GPU": 8, "student": 4, "teacher": 1}}
    assert fits({"CPU": 2, "GPU": 1, "teacher": 1}, types["gpu"])
    assert not fits({"CPU": 2, "GPU": 1, "teacher": 2}, types["gpu"])
    (problem,) = unplaceable(job, types)
    assert problem.startswith("a train worker needs {CPU: 4, GPU: 1, student: 8}")
    assert unplaceable(job, {"gpu": {**types["gpu"], "student": 8}}) == []


def test_kuberay_groups_read_params_before_limits():
    group = {
        "groupName": "g",
        "rayStartParams": {"resources": '"{\\"teacher\\": 2}"', "num-gpus": "1"},
        "template": {
            "spec": {
                "containers": [{"resources": {"limits": {"cpu": "1500m", "nvidia.com/gpu": 4}}}]
            }
        },
    }
    doc = {
        "kind": "RayCluster",
        "spec": {"headGroupSpec": {**group, "rayStartParams": {}}, "workerGroupSpecs": [group]},
    }
    assert node_types(doc) == {
        "head": {"CPU": 1.5, "GPU": 4.0},
        "g": {"CPU": 1.5, "GPU": 1.0, "teacher": 2.0},
    }


def test_a_file_without_node_types_is_refused(tmp_path):
    with pytest.raises(JobError, match="no node types"):
        load_node_types(RAYJOB)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    with pytest.raises(JobError, match="cannot read cluster config"):
        load_node_types(bad)


# scaling.workers: [min, max] (elastic Ray Train)


def test_elastic_workers_parse_and_round_trip(tmp_path):
    from raydistill.runtime import planned_cpus

    job = load_job(ROOT / "jobs" / "digits.yaml", ["scaling.workers=[1, 4]"])
    assert job.scaling.workers == [1, 4]
    assert (job.scaling.min_workers, job.scaling.max_workers) == (1, 4)
    assert planned_cpus(job) == 4 * 1 + 1 * 0.5 * 2 + 2  # sized for max workers
    saved = tmp_path / "job.yaml"
    saved.write_text(job.to_yaml())
    assert "workers:\n  - 1\n  - 4" in saved.read_text() or "workers: [1, 4]" in saved.read_text()
    assert load_job(saved) == job
    fixed = load_job(ROOT / "jobs" / "digits.yaml", ["scaling.workers=2"])
    assert fixed.scaling.workers == 2 and fixed.scaling.min_workers == fixed.scaling.max_workers


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("[3, 1]", "[min, max] needs 1 <= min <= max (got [3, 1])"),
        ("[0, 2]", "[min, max] needs 1 <= min <= max (got [0, 2])"),
        ("[1, 2, 3]", "must be a number of workers or [min, max]"),
        ("two", "must be a number of workers or [min, max]"),
        ("0", "Input should be greater than or equal to 1 (got 0)"),
    ],
)
def test_bad_worker_counts_are_one_clear_error(value, why):
    with pytest.raises(JobError) as err:
        load_job(ROOT / "jobs" / "digits.yaml", [f"scaling.workers={value}"])
    assert str(err.value).count("\n") == 0
    assert f"scaling.workers: {why}" in str(err.value)


def test_a_job_upload_carries_the_whole_package():
    """``ray job submit --working-dir .`` uploads what Ray's packaging walks, and that walk
    follows .gitignore: every tracked file of the package and the example jobs must be in it
    (a bare ``data/`` pattern once left raydistill/data/ out of every submitted job)."""
    import subprocess

    from ray._private.runtime_env.packaging import _dir_travel

    uploaded: set[Path] = set()
    _dir_travel(ROOT, [lambda p: p.name == ".git"], lambda p: uploaded.add(p.resolve()), True)
    tracked = subprocess.run(
        ["git", "ls-files", "raydistill", "jobs", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert len(tracked) > 50
    assert [f for f in tracked if (ROOT / f).resolve() not in uploaded] == []
