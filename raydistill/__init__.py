"""raydistill: knowledge distillation on Ray.

The Python API mirrors the YAML job: ``JobConfig`` is the job, ``Distiller`` the objective usable
in any PyTorch loop, ``run_job`` what ``raydistill train`` runs.
"""

from raydistill.check import TeacherCheck, check_teacher
from raydistill.cluster import job_requests, load_node_types, unplaceable
from raydistill.config import (
    DataConfig,
    DistillConfig,
    JobConfig,
    JobError,
    ModelSpec,
    OutputConfig,
    ScalingConfig,
    TeacherConfig,
    TeacherPoolConfig,
    TextConfig,
    TrainConfig,
    TuneConfig,
    load_job,
)
from raydistill.distill import (
    CrossModalDistiller,
    Distiller,
    DistillLoss,
    FeatureTap,
    Schedule,
    attention_loss,
    build_adapter,
    cosine_feature_loss,
    dkd_loss,
    feature_loss,
    hard_loss,
    sample_weights,
    soft_target_loss,
)
from raydistill.export import ExportResult, export_run, load_safetensors
from raydistill.models import build_model, load_weights, save_weights
from raydistill.models.hf import HFTextClassifier
from raydistill.pipeline import RunSummary, run_job, run_teacher
from raydistill.report import write_report
from raydistill.tune.search import TuneSummary, run_tune
from raydistill.tune.temperature_search import TemperatureSearch

__version__ = "0.1.0"

__all__ = [
    "CrossModalDistiller",
    "DataConfig",
    "DistillConfig",
    "DistillLoss",
    "Distiller",
    "ExportResult",
    "FeatureTap",
    "HFTextClassifier",
    "JobConfig",
    "JobError",
    "ModelSpec",
    "OutputConfig",
    "RunSummary",
    "ScalingConfig",
    "Schedule",
    "TeacherCheck",
    "TeacherConfig",
    "TeacherPoolConfig",
    "TemperatureSearch",
    "TextConfig",
    "TrainConfig",
    "TuneConfig",
    "TuneSummary",
    "attention_loss",
    "build_adapter",
    "build_model",
    "check_teacher",
    "cosine_feature_loss",
    "dkd_loss",
    "export_run",
    "feature_loss",
    "hard_loss",
    "job_requests",
    "load_job",
    "load_node_types",
    "load_safetensors",
    "load_weights",
    "run_job",
    "run_teacher",
    "run_tune",
    "sample_weights",
    "save_weights",
    "soft_target_loss",
    "unplaceable",
    "write_report",
]
