"""What a running cluster holds and, under an autoscaler, can launch: the nodes up now and the
node types the autoscaler may add, read from its own config.

Ray tells a driver only about the nodes that are up. A cluster started by the cluster launcher
(``ray up``) or by ``ray start --head --autoscaling-config=FILE`` runs Ray's autoscaler as a
``monitor`` process on the head, with that file on its command line: a driver on the head (every
``ray job submit`` entrypoint runs there) reads the node types and their ``max_workers`` from it.
Elsewhere (a KubeRay cluster, whose autoscaler reads the RayCluster resource, or a driver off
the head) the launchable types are unknown and only the live nodes count.

Two questions use this: can any node ever host one teacher actor (else the job is refused
before training, naming the resource), and how many actors ``teacher_pool.max_actors: auto``
may grow to.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

Resources = dict[str, float]
_CONFIG_FLAG = "--autoscaling-config="


@dataclass(frozen=True)
class NodeType:
    """One node type of an autoscaler's config: what a node offers and how many it may add."""

    name: str
    resources: Resources
    max_workers: int


def fit_count(request: Resources, node: Resources) -> int:
    """How many slots of ``request`` one node of ``node``'s resources holds side by side."""
    counts = [math.floor(node.get(k, 0.0) / v + 1e-9) for k, v in request.items() if v > 0]
    return max(0, min(counts)) if counts else 0


def launchable_types(config: dict) -> list[NodeType]:
    """The node types of a launcher-style autoscaling config (``available_node_types``); the
    head type counts once (it is up), the others up to their ``max_workers``."""
    head = config.get("head_node_type")
    out = []
    for name, spec in (config.get("available_node_types") or {}).items():
        offered = (spec.get("resources") or {}).items()
        resources = {k: float(v) for k, v in offered if k != "object_store_memory"}
        count = 1 if name == head else int(spec.get("max_workers", config.get("max_workers", 0)))
        out.append(NodeType(name, resources, count))
    return out


def autoscaler_config_path(gcs_port: int) -> Path | None:
    """The config file of the autoscaler running on this machine for the cluster whose GCS
    listens on ``gcs_port`` (another cluster's monitor on the machine is not ours), or None."""
    import psutil  # vendored by Ray: importable once ray is

    for proc in psutil.process_iter(["cmdline"]):
        try:
            args = proc.info["cmdline"] or ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if not any(a.startswith(_CONFIG_FLAG) for a in args):
            continue
        ours = any(
            a.startswith(("--gcs-address=", "--address=")) and a.endswith(f":{gcs_port}")
            for a in args
        )
        if ours:
            path = next(a for a in args if a.startswith(_CONFIG_FLAG))[len(_CONFIG_FLAG) :]
            return Path(path).expanduser()
    return None


def read_types(path: Path) -> list[NodeType] | None:
    """Node types from an autoscaler config file (JSON or YAML); None if it cannot be read."""
    try:
        text = path.read_text()
        config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return launchable_types(config) if isinstance(config, dict) else None


@dataclass(frozen=True)
class ClusterOffer:
    """The connected cluster: its live nodes' resources and, when an autoscaler's config was
    found, the node types it may launch."""

    live: list[Resources]
    types: list[NodeType] | None

    @classmethod
    def current(cls) -> ClusterOffer:
        """Ask the Ray this process is connected to (and its autoscaler, if on this machine)."""
        import ray

        live = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
        if not ray.is_initialized():  # asking for the runtime context would start a Ray
            return cls(live, None)
        port = int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])
        path = autoscaler_config_path(port)
        return cls(live, read_types(path) if path is not None else None)

    def hosts(self, request: Resources) -> bool:
        """Whether some live node, or some node type the autoscaler may launch, holds one."""
        nodes = self.live + [t.resources for t in self.types or () if t.max_workers > 0]
        return any(fit_count(request, n) >= 1 for n in nodes)

    def capacity(self, request: Resources) -> tuple[int, str]:
        """How many ``request`` slots the cluster holds at its largest, and how that was
        counted (for the line the run prints)."""
        live = sum(fit_count(request, n) for n in self.live)
        if self.types is None:
            return live, f"{live} fit the {len(self.live)} live node(s)"
        parts = [(t, fit_count(request, t.resources) * t.max_workers) for t in self.types]
        most = sum(n for _, n in parts)
        named = ", ".join(
            f"{t.max_workers} x {t.name} ({fit_count(request, t.resources)} each)"
            for t, n in parts
            if n
        )
        # the autoscaler's largest cluster, or what is up when that holds more (nodes added
        # by hand past the config's max_workers)
        return max(most, live), f"{most} fit the autoscaler's node types at their max: {named}"
