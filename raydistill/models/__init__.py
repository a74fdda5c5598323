"""Models from specs (``torchvision:<name>``, ``module.path:factory``) and safe weight files."""

from raydistill.models.specs import (
    build_model,
    count_parameters,
    load_weights,
    read_state_dict,
    resolve_builder,
    save_weights,
)

__all__ = [
    "build_model",
    "count_parameters",
    "load_weights",
    "read_state_dict",
    "resolve_builder",
    "save_weights",
]
