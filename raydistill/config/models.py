"""The ``teacher`` and ``student`` sections: which model, built how, starting from which weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from raydistill.config.base import Section, existing_file
from raydistill.config.train import TrainOverrides


class ModelSpec(Section):
    """A model built from a spec string.

    ``model`` is ``torchvision:<name>`` (e.g. ``torchvision:resnet18``), ``timm:<name>`` (e.g.
    ``timm:resnet10t``; ``args`` go to ``timm.create_model``, e.g. ``in_chans``, ``img_size``;
    pretrained weights only from a local ``args.pretrained_file``), ``hf:<directory or hub
    name>`` (a transformers sequence classifier, read offline from local files first; ``args``:
    ``pretrained`` (default true), ``config`` overrides such as ``num_hidden_layers``) or
    ``module.path:factory`` for user code. ``args`` are passed to the builder; ``num_classes``
    is filled in from the data when the builder accepts it. ``checkpoint`` is a local weights
    file (loaded with ``weights_only=True``). ``tokenizer`` makes the model a text model: it
    reads packed token rows [N, 2, L] made by that tokenizer (null: an ``hf:`` model's own).
    """

    model: str = Field(
        ...,
        description="torchvision:<name>, timm:<name>, hf:<directory or hub name> or"
        " module.path:factory",
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the builder"
    )
    checkpoint: Path | None = Field(
        None, description="local weights file loaded into the model (weights_only); null: none"
    )
    tokenizer: str | None = Field(
        None, description="hf tokenizer directory or hub name; null: an hf: model's own"
    )

    @property
    def text_tokenizer(self) -> str | None:
        """The tokenizer this model reads text with, or None for a model of images/tensors."""
        if self.tokenizer is not None:
            return self.tokenizer
        prefix, _, name = self.model.partition(":")
        return name if prefix == "hf" else None

    @field_validator("model")
    @classmethod
    def _spec_shape(cls, value: str) -> str:
        prefix, sep, name = value.partition(":")
        if not sep or not prefix or not name:
            raise ValueError(
                f"'{value}' is not a model spec: use 'torchvision:<name>', 'timm:<name>', "
                "'hf:<directory>' or 'module.path:factory'"
            )
        return value

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: Path | None) -> Path | None:
        return existing_file(value)


class TeacherConfig(ModelSpec):
    """The teacher. With no ``checkpoint``, ``raydistill teacher`` trains it into the run directory
    (``train`` runs that stage first when needed)."""

    train: TrainOverrides = Field(
        default_factory=TrainOverrides,
        description="the teacher stage's own epochs, batch size, optimizer, lr, weight decay",
    )


class StudentConfig(ModelSpec):
    """The student (``checkpoint``, when set, initialises its weights)."""

    target: float | None = Field(
        None,
        gt=0,
        le=1,
        description="accuracy the student should reach; `raydistill check-teacher` checks the"
        " teacher leaves headroom above it",
    )
