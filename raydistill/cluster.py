"""Will a job's actors and workers fit a cluster's node types? Read from the cluster's config.

Ray-free. Reads Ray cluster launcher configs (``available_node_types``, as in
``cluster/aws.yaml``) and KubeRay manifests (a ``RayCluster``'s head and worker groups, or a
``RayJob``'s embedded cluster). A job asks for two kinds of slot (see :func:`job_requests`);
a request no node type can hold never schedules, and the autoscaler cannot help: this is the
check ``raydistill validate JOB --cluster CONFIG`` runs before anything starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from raydistill.config import JobConfig, JobError, ScalingConfig, yaml_error_line

Resources = dict[str, float]

# Kubernetes resource names whose container limit Ray turns into its own GPU resource.
_K8S_GPUS = ("nvidia.com/gpu", "amd.com/gpu")


def job_requests(job: JobConfig | ScalingConfig) -> dict[str, Resources]:
    """What one teacher actor and one train worker ask Ray for (logical CPUs, GPUs, custom).

    Mirrors :func:`raydistill.teacher.pool.attach_teacher` and Ray Train's ``ScalingConfig``
    (``use_gpu`` adds one GPU per worker unless ``resources_per_worker`` names ``GPU``). Train
    workers also train the teacher when the job has no teacher checkpoint. Only the job's
    ``scaling`` section matters, so that section alone is accepted too.
    """
    s = job.scaling if isinstance(job, JobConfig) else job
    pool = s.teacher_pool
    actor: Resources = {"CPU": pool.num_cpus, "GPU": pool.num_gpus, **pool.resources}
    worker: Resources = {"CPU": s.cpus_per_worker, **s.resources_per_worker}
    if s.use_gpu:
        worker.setdefault("GPU", 1.0)
    return {"teacher actor": _nonzero(actor), "train worker": _nonzero(worker)}


def _nonzero(resources: Resources) -> Resources:
    return {k: float(v) for k, v in resources.items() if v}


def fits(request: Resources, node: Resources) -> bool:
    """True when one node of this type can hold ``request`` on its own."""
    return all(node.get(key, 0.0) >= amount for key, amount in request.items())


def unplaceable(job: JobConfig | ScalingConfig, node_types: dict[str, Resources]) -> list[str]:
    """One line per request of ``job`` that no node type can hold (empty: everything fits)."""
    problems = []
    for what, request in job_requests(job).items():
        if not any(fits(request, node) for node in node_types.values()):
            offered = "; ".join(f"{name} {_fmt(r)}" for name, r in node_types.items())
            problems.append(f"a {what} needs {_fmt(request)}, no node type has it ({offered})")
    return problems


def _fmt(resources: Resources) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"


def load_node_types(path: str | Path) -> dict[str, Resources]:
    """Node types and the Ray resources one node of each offers, from a cluster config file.

    Launcher configs list ``resources`` per type (the head's too); KubeRay groups give theirs in
    ``rayStartParams`` (``num-cpus``, ``num-gpus``, ``resources``) or, failing that, through the
    container's limits (``cpu``, ``nvidia.com/gpu``), as Ray itself reads them in a pod.
    """
    path = Path(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as exc:
        raise JobError(f"{path}: cannot read cluster config: {yaml_error_line(exc)}") from exc
    except OSError as exc:
        raise JobError(f"{path}: cannot read cluster config: {exc}") from exc
    types: dict[str, Resources] = {}
    for doc in docs:
        types.update(node_types(doc))
    if not types:
        raise JobError(f"{path}: no node types (not a Ray launcher config or KubeRay manifest)")
    return types


def node_types(doc: dict[str, Any]) -> dict[str, Resources]:
    """Node types of one parsed YAML document (launcher config, RayCluster or RayJob)."""
    if "available_node_types" in doc:
        return {
            name: {k: float(v) for k, v in (spec.get("resources") or {}).items()}
            for name, spec in doc["available_node_types"].items()
        }
    spec = doc.get("spec") or {}
    if doc.get("kind") == "RayJob":
        spec = spec.get("rayClusterSpec") or {}
    if doc.get("kind") not in ("RayCluster", "RayJob") or "headGroupSpec" not in spec:
        return {}
    groups = {"head": spec["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in spec.get("workerGroupSpecs") or []})
    return {name: _group_resources(group) for name, group in groups.items()}


def _group_resources(group: dict[str, Any]) -> Resources:
    params = {k: str(v) for k, v in (group.get("rayStartParams") or {}).items()}
    container = group["template"]["spec"]["containers"][0]
    limits = (container.get("resources") or {}).get("limits") or {}
    out: Resources = {}
    if "num-cpus" in params:
        out["CPU"] = float(params["num-cpus"])
    elif "cpu" in limits:
        out["CPU"] = _k8s_quantity(str(limits["cpu"]))
    gpus = next((limits[k] for k in _K8S_GPUS if k in limits), None)
    if "num-gpus" in params:
        out["GPU"] = float(params["num-gpus"])
    elif gpus is not None:
        out["GPU"] = float(gpus)
    if "resources" in params:
        # KubeRay pastes the value into a shell command line, so manifests quote and escape it:
        # '"{\"teacher\": 1}"'.
        text = params["resources"].strip().strip("'\"").replace('\\"', '"')
        try:
            custom = json.loads(text)
        except json.JSONDecodeError as exc:
            raise JobError(f"rayStartParams.resources is not JSON: {params['resources']}") from exc
        out.update({k: float(v) for k, v in custom.items()})
    return out


def _k8s_quantity(value: str) -> float:
    """``"8"`` -> 8.0, ``"500m"`` -> 0.5 (Kubernetes CPU quantities)."""
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)
