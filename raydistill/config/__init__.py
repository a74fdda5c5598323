"""The job schema: everything a run does is visible in its YAML.

A job file is parsed into :class:`JobConfig`; every field's default and meaning is documented in
its ``description``, and the resolved job (defaults filled in) is written into the run
directory. Errors name the offending key path (``distill.alpha.start``) and say why.

One module per part of the job: :mod:`~raydistill.config.data` (its COCO splits in
:mod:`~raydistill.config.coco`),
:mod:`~raydistill.config.models` (teacher, student), :mod:`~raydistill.config.distill`,
:mod:`~raydistill.config.train`, :mod:`~raydistill.config.scaling`,
:mod:`~raydistill.config.storage` (cache, output; its trackers in
:mod:`~raydistill.config.tracking`), :mod:`~raydistill.config.tune`,
:mod:`~raydistill.config.job` (the whole job and its cross-section checks) and
:mod:`~raydistill.config.loading` (files, overrides, error lines).
"""

from raydistill.config.coco import CocoConfig, CocoSplitPaths
from raydistill.config.data import (
    AugmentConfig,
    BalanceConfig,
    DataConfig,
    SplitConfig,
    TextConfig,
)
from raydistill.config.distill import (
    DetectionDistillConfig,
    DistillConfig,
    DKDConfig,
    FeaturePair,
    check_schedule_ranges,
)
from raydistill.config.errors import JobError, KeyedError
from raydistill.config.job import JobConfig
from raydistill.config.loading import (
    apply_overrides,
    format_validation_error,
    job_from_dict,
    load_job,
    parse_override,
    yaml_error_line,
)
from raydistill.config.models import ModelSpec, StudentConfig, TeacherConfig
from raydistill.config.scaling import ScalingConfig, TeacherPoolConfig
from raydistill.config.storage import CacheConfig, OutputConfig
from raydistill.config.tracking import MlflowConfig, TrackingConfig, WandbConfig
from raydistill.config.train import EarlyStopping, TrainConfig, TrainOverrides
from raydistill.config.tune import TuneConfig

__all__ = [
    "AugmentConfig",
    "BalanceConfig",
    "CacheConfig",
    "CocoConfig",
    "CocoSplitPaths",
    "DKDConfig",
    "DataConfig",
    "DetectionDistillConfig",
    "DistillConfig",
    "EarlyStopping",
    "FeaturePair",
    "JobConfig",
    "JobError",
    "KeyedError",
    "MlflowConfig",
    "ModelSpec",
    "OutputConfig",
    "ScalingConfig",
    "SplitConfig",
    "StudentConfig",
    "TeacherConfig",
    "TeacherPoolConfig",
    "TextConfig",
    "TrackingConfig",
    "TrainConfig",
    "TrainOverrides",
    "TuneConfig",
    "WandbConfig",
    "apply_overrides",
    "check_schedule_ranges",
    "format_validation_error",
    "job_from_dict",
    "load_job",
    "parse_override",
    "yaml_error_line",
]
