"""Hugging Face transformers models as raydistill text classifiers (``hf:<name or directory>``).

Every text row travels as one int64 tensor [N, 2, L]: token ids and attention mask stacked, so
the teacher pool, the cache, Ray Train and the evaluators handle text exactly like images.
:class:`HFTextClassifier` unpacks it for the transformer and exposes what distillation taps by
name: ``hidden.<i>`` (embeddings 0, then each layer, [N, L, H]), ``attention.<i>`` (layer i's
attention averaged over heads, [N, L, L]) and ``pooled`` (the mean of the last layer over real
tokens, [N, H]).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from raydistill.config import JobError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json")


def _require_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise JobError(
            "hf: models need transformers: pip install 'raydistill[text]' (or transformers>=5)"
        ) from None
    # per-file progress bars on every load would drown the run's own progress lines.
    transformers.utils.logging.disable_progress_bar()
    # A fresh classification head is expected here (the teacher stage trains it): no load report
    transformers.utils.logging.set_verbosity_error()
    return transformers


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def local_path(name: str) -> Path:
    """``name`` as a local path: relative paths that are not found here are looked up in the
    driver's working directory (workers of a local Ray start elsewhere)."""
    from raydistill.runtime import DRIVER_CWD_ENV

    path = Path(name).expanduser()
    driver_cwd = os.environ.get(DRIVER_CWD_ENV)
    if not path.is_absolute() and not path.exists() and driver_cwd:
        candidate = Path(driver_cwd) / path
        if candidate.exists():
            return candidate
    return path


def locate(name: str, need: tuple[str, ...] = ("config.json",)) -> str:
    """A local directory for ``name``: the directory itself, or its copy in the Hugging Face
    cache. Hub names not cached are fetched only when the hub is allowed (``HF_HUB_OFFLINE``
    unset); otherwise the error names the missing files and how to provide them."""
    path = local_path(name)
    if path.is_dir() or name.startswith(("/", ".", "~")):
        if not path.is_dir():
            raise JobError(f"hf:{name}: no such directory (relative paths start at {Path.cwd()})")
        missing = [f for f in need if not (path / f).is_file()]
        if missing:
            raise JobError(
                f"hf:{name}: the directory lacks {', '.join(missing)} (has: "
                f"{', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'})"
            )
        return str(path)
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True)
    except Exception as exc:  # the cache raises several types; all mean "not here"
        if _offline():
            raise JobError(
                f"hf:{name} is neither a local directory nor in the local Hugging Face cache, and "
                "HF_HUB_OFFLINE is set: "
                f"download it once (huggingface-cli download {name}) or point hf: at a local "
                f"directory with config.json, {WEIGHT_FILES[0]} and tokenizer files ({exc})"
            ) from None
    try:
        return snapshot_download(name)
    except Exception as exc:
        raise JobError(
            f"hf:{name}: not in the local Hugging Face cache and the hub is unreachable ({exc}); "
            f"point hf: at a local directory with config.json, {WEIGHT_FILES[0]} and tokenizer "
            "files"
        ) from None


class HFTextClassifier(nn.Module):
    """A ``transformers`` sequence classifier that takes packed token rows.

    Args:
        model: an ``AutoModelForSequenceClassification`` instance.
        source: the directory it came from (its tokenizer is looked for there).

    ``forward(inputs)`` takes int64 [N, 2, L] (ids, attention mask) and returns logits [N, C].
    The named taps cost nothing unless hooked: hidden states and attentions are only asked of
    the transformer when a hook listens.
    """

    def __init__(self, model: nn.Module, source: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.source = source
        layers = int(model.config.num_hidden_layers)
        self.hidden = nn.ModuleList(nn.Identity() for _ in range(layers + 1))
        self.attention = nn.ModuleList(nn.Identity() for _ in range(layers))
        self.pooled = nn.Identity()

    @staticmethod
    def _listened(modules: nn.ModuleList | nn.Module) -> bool:
        return any(m._forward_hooks for m in modules.modules())

    def forward(self, inputs: Tensor) -> Tensor:
        """int64 [N, 2, L] (token ids, attention mask) -> logits [N, C]."""
        if inputs.dim() != 3 or inputs.shape[1] != 2:
            raise ValueError(
                "text models take packed token rows [N, 2, L] (ids, mask), got "
                f"{list(inputs.shape)}"
            )
        inputs = inputs.long()
        ids, mask = inputs[:, 0], inputs[:, 1]
        vocab = self.model.get_input_embeddings().num_embeddings
        if ids.numel() and int(ids.max()) >= vocab:
            raise ValueError(
                f"token id {int(ids.max())} is outside the model's {vocab} embeddings: the "
                "rows were made by another tokenizer than this model's"
            )
        want_hidden = self._listened(self.hidden) or self._listened(self.pooled)
        want_attention = self._listened(self.attention)
        if want_attention and self.model.config._attn_implementation != "eager":
            # sdpa/flash kernels never materialise attention maps; eager does.
            self.model.set_attn_implementation("eager")
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            output_hidden_states=want_hidden,
            output_attentions=want_attention,
        )
        if want_hidden:
            # Padding is zeroed on both sides, so it adds nothing to a feature loss.
            keep = mask.unsqueeze(-1).to(out.hidden_states[0].dtype)
            for tap, state in zip(self.hidden, out.hidden_states, strict=True):
                tap(state * keep)
            last = out.hidden_states[-1] * keep
            self.pooled(last.sum(1) / keep.sum(1).clamp(min=1))
        if want_attention:
            for tap, attention in zip(self.attention, out.attentions, strict=True):
                tap(attention.mean(1))
        return out.logits

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(config, "hidden_size", None) or config.dim)

    def save_pretrained(self, directory: Path, tokenizer_source: str | None = None) -> Path:
        """Write the transformer in Hugging Face format, with its tokenizer, to ``directory``
        (plain ``AutoModelForSequenceClassification.from_pretrained`` reads it)."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        source = tokenizer_source or self.source
        if source is not None:
            load_tokenizer(source).save_pretrained(directory)
        return directory


def check_tokenizer_fits(model: nn.Module, tokenizer_source: str, what: str) -> None:
    """Refuse a tokenizer whose ids overflow a text model's embedding table (the forward would
    fail deep inside the transformer, on a train worker)."""
    if not isinstance(model, HFTextClassifier):
        return
    size = len(load_tokenizer(tokenizer_source))
    vocab = model.model.get_input_embeddings().num_embeddings
    if size > vocab:
        raise JobError(
            f"{what}: tokenizer {tokenizer_source} has {size} tokens but the model embeds only "
            f"{vocab}: use the model's own tokenizer or a config with vocab_size >= {size}"
        )


def build_hf_classifier(
    name: str,
    num_classes: int | None = None,
    pretrained: bool = True,
    config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> HFTextClassifier:
    """The ``hf:<name>`` model: ``name`` is a local directory or a hub name (see
    :func:`locate`). ``pretrained=False`` builds randomly initialised weights from the
    directory's config; ``config`` overrides config fields (e.g. ``num_hidden_layers: 2``);
    other ``kwargs`` go to ``from_pretrained`` (e.g. ``attn_implementation``).
    ``causal_lm=True`` builds a causal LM instead (:mod:`raydistill.models.hf_causal`)."""
    if kwargs.pop("causal_lm", False):
        from raydistill.models.hf_causal import build_hf_causal_lm

        return build_hf_causal_lm(name, num_classes, pretrained, config, **kwargs)
    transformers = _require_transformers()
    path = locate(name)
    overrides = dict(config or {})
    if num_classes is not None:
        overrides["num_labels"] = num_classes
    try:
        cfg = transformers.AutoConfig.from_pretrained(path, **overrides)
    except (OSError, ValueError) as exc:
        raise JobError(f"hf:{name}: cannot read its config: {exc}") from None
    auto = transformers.AutoModelForSequenceClassification
    if pretrained:
        model = load_pretrained(auto, name, path, cfg, **kwargs)
    else:
        model = auto.from_config(cfg, **kwargs)
    return HFTextClassifier(model, source=path)


def load_pretrained(auto: Any, name: str, path: str, cfg: Any, **kwargs: Any) -> Any:
    """``auto.from_pretrained`` of the local model at ``path``, its missing weights or a load
    failure named in one line (``name``: the job's ``hf:`` name)."""
    if not any((Path(path) / f).is_file() for f in WEIGHT_FILES):
        raise JobError(
            f"hf:{name}: no weights in {path} (one of {', '.join(WEIGHT_FILES)}); "
            "set args: {pretrained: false} to start from random weights"
        )
    try:
        return auto.from_pretrained(path, config=cfg, **kwargs)
    except (OSError, ValueError) as exc:
        raise JobError(f"hf:{name}: cannot load its weights: {exc}") from None


def load_tokenizer(source: str) -> Any:
    """The tokenizer stored with ``source`` (a local directory or a hub name), offline-first."""
    transformers = _require_transformers()
    path = locate(source, need=())
    if not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
        raise JobError(
            f"tokenizer {source}: {path} has none of {', '.join(TOKENIZER_FILES)}; set the "
            "model's `tokenizer:` to a directory that has one"
        )
    try:
        return transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise JobError(f"tokenizer {source}: cannot load it: {exc}") from None


def encode_texts(tokenizer: Any, texts: list[str], max_length: int) -> torch.Tensor:
    """Packed token rows int64 [N, 2, max_length] (ids, attention mask), padded and cut."""
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1).long()
