"""Ray Train: the per-worker loop and the driver that runs one stage."""

from raydistill.train.spec import Role, StageSpec
from raydistill.train.stage import StageResult, finished_stage, run_stage

__all__ = ["Role", "StageResult", "StageSpec", "finished_stage", "run_stage"]
