"""Starting or joining Ray, with enough logical CPUs that the job's plan cannot deadlock."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from raydistill.config import JobConfig, JobError, TeacherPoolConfig


def planned_cpus(job: JobConfig) -> int:
    """Logical CPUs the job's plan needs at once on a local Ray.

    Train workers, two teacher pools (train and val splits stream together) and headroom for
    Ray Data's read tasks. A local Ray is started with at least this many logical CPUs: an
    actor-pool stage feeding Train otherwise hangs on a 2-core machine (Ray 2.60 waits forever:
    "Cluster resources are not enough to run any task from ActorPoolMapOperator").
    """
    s = job.scaling
    pool = s.teacher_pool.planned_max_actors * s.teacher_pool.num_cpus * 2
    return math.ceil(s.max_workers * s.cpus_per_worker + pool + 2)


TRAIN_POLL_ENV, TRAIN_POLL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25"
GCS_PORT_ENV = "RAY_GCS_SERVER_PORT"  # read by ray.init when it starts a local head
DRIVER_CWD_ENV = "RAYDISTILL_DRIVER_CWD"  # the driver's working directory, for local workers


@contextmanager
def ray_session(job: JobConfig, cpus: int | None = None) -> Iterator[None]:
    """Use the Ray already initialised, join ``RAY_ADDRESS``, or start a local Ray for the job
    with at least ``cpus`` (default: :func:`planned_cpus`) logical CPUs. When the CLI asked
    for a quiet terminal (:mod:`raydistill.console`), Ray's own output during the session goes
    to the run directory's ``ray.log``."""
    import ray

    global _STARTED_HERE
    if ray.is_initialized():
        yield
        return
    # Usage reporting would try the network, which jobs must never need.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Train's controller collects each epoch's report when it polls the workers (every 2 s by
    # default); with short epochs that poll, not training, sets the pace.
    os.environ.setdefault(TRAIN_POLL_ENV, TRAIN_POLL_S)
    from raydistill.console import quiet_ray
    from raydistill.rundir import RAY_LOG

    with quiet_ray(job.run_dir / RAY_LOG) as console:
        _init(job, cpus)
        if console is not None:
            console.route_worker_lines()
        quiet_data()
        try:
            yield
        finally:
            _STARTED_HERE = False
            ray.shutdown()


def _init(job: JobConfig, cpus: int | None) -> None:
    import ray

    global _STARTED_HERE
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
    else:
        cpus = max(os.cpu_count() or 1, cpus or planned_cpus(job))
        # The dashboard (loopback only) serves the State API that Train's placement-group
        # cleaner polls; without it every run logs a flood of warnings.
        # Workers of a local Ray do not start in this directory: they get it in DRIVER_CWD_ENV,
        # where relative model and tokenizer paths (hf:data/minilm) are resolved.
        # They also get this Ray's own address: the cleaner otherwise looks for "the" local Ray,
        # and with a second one on the machine (another job, a user's `ray start`) it asks the
        # wrong one whether our Train controller lives, hears no, and removes our placement
        # group: training dies with "Destroying worker since its placement group was removed".
        port = _free_port()
        previous = os.environ.get(GCS_PORT_ENV)
        os.environ[GCS_PORT_ENV] = str(port)
        try:
            ray.init(
                # a new Ray of this job's own, even where a `ray start` cluster runs (set
                # RAY_ADDRESS to join one)
                address="local",
                num_cpus=cpus,
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                log_to_driver=True,
                runtime_env={
                    "env_vars": {
                        DRIVER_CWD_ENV: os.getcwd(),
                        "RAY_ADDRESS": f"{ray.util.get_node_ip_address()}:{port}",
                    }
                },
            )
        finally:
            if previous is None:
                os.environ.pop(GCS_PORT_ENV, None)
            else:
                os.environ[GCS_PORT_ENV] = previous
        _STARTED_HERE = True


_STARTED_HERE = False  # a local Ray this process started: no autoscaler will add nodes


def started_here() -> bool:
    """Whether the Ray in use is a local one this process started (its CPUs are the plan's)."""
    return _STARTED_HERE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def check_worker_resources(job: JobConfig, log: Callable[[str], None] = print) -> None:
    """Fail fast when no node could ever host a train worker (a GPU job on a laptop would
    otherwise wait forever). On a joined cluster an autoscaler may still add such nodes, so the
    gap is only reported."""
    import ray

    s = job.scaling
    need = {
        "CPU": s.cpus_per_worker,
        **({"GPU": 1.0} if s.use_gpu else {}),
        **s.resources_per_worker,
    }
    have = ray.cluster_resources()
    missing = {k: v for k, v in need.items() if have.get(k, 0.0) < v}
    if not missing:
        return
    what = ", ".join(f"{k}: {v:g}" for k, v in missing.items())
    hint = (
        "set scaling.use_gpu: false to train on CPUs"
        if "GPU" in missing
        else "start Ray with those resources or change scaling.resources_per_worker"
    )
    if _STARTED_HERE:
        raise JobError(f"scaling: each train worker needs {what}, which this Ray lacks; {hint}")
    log(f"warning: no node offers {what} per train worker yet; waiting for the autoscaler")


def missing_everywhere(request: dict[str, float], nodes: list[dict[str, float]]) -> str | None:
    """What no single node of ``nodes`` can offer of ``request`` ("GPU: 2", or the whole
    request when each part exists somewhere but never together); None when one node fits."""
    if any(all(n.get(k, 0.0) >= v for k, v in request.items()) for n in nodes):
        return None
    short = {k: v for k, v in request.items() if not any(n.get(k, 0.0) >= v for n in nodes)}
    return ", ".join(f"{k}: {v:g}" for k, v in (short or request).items())


def check_pool_resources(job: JobConfig, log: Callable[[str], None] = print) -> None:
    """Refuse, before training, a teacher pool whose actor no node could ever host (each actor
    must fit on one node). On a joined cluster the autoscaler's node types count too, when its
    config is found (:mod:`raydistill.capacity`); without them an autoscaler may still add
    such nodes, so the gap is only reported."""
    from raydistill.capacity import ClusterOffer

    request = job.scaling.teacher_pool.request
    offer = ClusterOffer.current()
    if offer.hosts(request):
        return
    what = missing_everywhere(request, offer.live + [t.resources for t in offer.types or ()])
    hint = "lower scaling.teacher_pool.num_gpus/num_cpus/resources"
    if _STARTED_HERE:
        raise JobError(
            f"scaling.teacher_pool: each teacher actor needs {what} on one node, which no "
            f"node of this Ray has; {hint}"
        )
    if offer.types is not None:
        types = "; ".join(f"{t.name} {t.resources}" for t in offer.types)
        raise JobError(
            f"scaling.teacher_pool: each teacher actor needs {what} on one node, which no "
            f"live node and no node type the autoscaler can launch offers ({types}); {hint}"
        )
    log(f"warning: no node offers {what} per teacher actor yet; waiting for the autoscaler")


# Pools sized by max_actors: auto, per cluster and pool: the size (and its line) once a process.
_AUTO_SIZES: dict[tuple[str, str], int] = {}


def pool_max_actors(pool: TeacherPoolConfig, log: Callable[[str], None] | None = None) -> int:
    """The pool's ``max_actors``, with ``auto`` sized on the connected cluster: as many actors
    as it holds at its largest (its autoscaler's node types at their ``max_workers`` when
    known, else its live nodes), at least ``min_actors``. Ray Data's actor pool then grows and
    shrinks between ``min_actors`` and that bound as the trainers consume rows (it adds an
    actor while inputs queue and removes idle ones); the run prints the bound and why."""
    if pool.max_actors != "auto":
        return pool.max_actors
    import ray

    from raydistill.capacity import ClusterOffer

    cluster = ray.get_runtime_context().gcs_address if ray.is_initialized() else ""
    key = (cluster, pool.model_dump_json())
    if key not in _AUTO_SIZES:
        most, why = ClusterOffer.current().capacity(pool.request)
        if _STARTED_HERE:  # its logical CPUs are planned_cpus', not cores: actors share cores
            cores = max(1, (os.cpu_count() or 2) // 2)
            if cores < most:
                most, why = cores, f"a local Ray: half of this machine's {os.cpu_count()} cores"
        _AUTO_SIZES[key] = max(pool.min_actors, most)
        (log or _flushed)(
            f"[teacher] pool max_actors auto: {_AUTO_SIZES[key]} actor(s) at most ({why}; "
            f"{pool.request} each), from {pool.min_actors}"
        )
    return _AUTO_SIZES[key]


def _flushed(line: str) -> None:
    print(line, flush=True)


def quiet_data() -> None:
    """Plain log lines instead of progress bars that flood CI logs."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
