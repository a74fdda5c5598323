"""Hugging Face causal language models (``AutoModelForCausalLM``: Llama, Qwen2, GPT-2, ...) as
raydistill models.

``hf:<directory or hub name>`` with ``args: {causal_lm: true}`` (which ``task: causal_lm``
fills in) builds one, from the directory's weights or, with ``pretrained: false``, randomly
initialised from its config plus ``config`` overrides (``num_hidden_layers: 2``). Nothing is
downloaded unless the hub is allowed (see :func:`raydistill.models.hf.locate`).

Rows are int64 [N, 3, L] (ids, attention, target mask; see :mod:`raydistill.data.lm_text`) or
[N, 2, L] (ids, attention); the forward returns float32 logits [N, L, V] over the shared
vocabulary: the first ``vocab`` rows of the output embedding, so that a teacher and a student
of one family whose tables are padded to different sizes (151936 vs 152064) line up.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from raydistill.config import JobError
from raydistill.models.hf import _require_transformers, load_pretrained, load_tokenizer, locate


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM over packed token rows.

    Args:
        model: an ``AutoModelForCausalLM`` instance.
        source: the directory it came from (its tokenizer is looked for there).
        vocab: the shared vocabulary size the logits are cut to (None: the model's own).
    """

    def __init__(self, model: nn.Module, source: str | None = None, vocab: int | None = None):
        super().__init__()
        self.model = model
        self.source = source
        rows = int(model.get_output_embeddings().weight.shape[0])
        if vocab is not None and vocab > rows:
            raise JobError(
                f"hf:{source}: the tokenizer has {vocab} tokens but the model predicts only "
                f"{rows}: use a config with vocab_size >= {vocab}"
            )
        self.vocab = int(vocab or rows)

    @property
    def embedding_rows(self) -> int:
        return int(self.model.get_input_embeddings().num_embeddings)

    def forward(self, inputs: Tensor) -> Tensor:
        """int64 [N, 2 or 3, L] -> float32 logits [N, L, vocab]."""
        if inputs.dim() != 3 or inputs.shape[1] not in (2, 3):
            raise ValueError(
                "causal LMs take token rows [N, 3, L] (ids, attention, target) or [N, 2, L], "
                f"got {list(inputs.shape)}"
            )
        inputs = inputs.long()
        ids, mask = inputs[:, 0], inputs[:, 1]
        if ids.numel() and int(ids.max()) >= self.embedding_rows:
            raise ValueError(
                f"token id {int(ids.max())} is outside the model's {self.embedding_rows} "
                "embeddings: the rows were made by another tokenizer than this model's"
            )
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        return logits[..., : self.vocab].float()

    def greedy(self, ids: Tensor, new_tokens: int, eos_id: int | None = None) -> Tensor:
        """Greedy continuation of one prompt int64 [P] by up to ``new_tokens`` tokens (the
        argmax over the shared vocabulary; stops after ``eos_id``); returns only the new
        tokens int64 [<= new_tokens], on the CPU."""
        return self.sample(ids, new_tokens, eos_id)

    @torch.no_grad()
    def sample(
        self,
        ids: Tensor,
        new_tokens: int,
        eos_id: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continuation of one prompt int64 [P] by up to ``new_tokens`` tokens, stopping after
        ``eos_id``: the argmax over the shared vocabulary at ``temperature`` 0, else a draw
        from softmax(logits / temperature) cut to its ``top_p`` nucleus, by ``generator`` (a
        CPU ``torch.Generator``: the draw runs on the CPU, so the same seed and the same
        logits give the same token whichever device computed them). Returns
        only the new tokens int64 [<= new_tokens], on the CPU. The report's generations and
        the teacher pool's (``distill.teacher_pass: generate``) both run this loop."""
        self.eval()
        device = self.model.get_input_embeddings().weight.device
        # the key/value cache: each step feeds only the newest token (transformers 5.x renames
        # past_key_values to cache)
        name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else None
        name = name or "past_key_values"
        step, past, out = ids.long()[None].to(device), None, []
        for _ in range(new_tokens):
            given = {name: past} if past is not None else {}
            result = self.model(input_ids=step, use_cache=True, **given)
            past = getattr(result, name, None)
            logits = result.logits[0, -1, : self.vocab].float()
            if temperature <= 0:
                nxt = int(logits.argmax())
            else:
                nxt = _draw(logits, temperature, top_p, generator)
            out.append(nxt)
            if eos_id is not None and nxt == eos_id:
                break
            step = torch.tensor([[nxt]], device=device)
        return torch.tensor(out, dtype=torch.long)

    def save_pretrained(self, directory: Path, tokenizer_source: str | None = None) -> Path:
        """Write the model in Hugging Face format with its tokenizer (plain
        ``AutoModelForCausalLM.from_pretrained`` reads it)."""
        directory = Path(directory)
        self.model.save_pretrained(directory)
        source = tokenizer_source or self.source
        if source is not None:
            load_tokenizer(source).save_pretrained(directory)
        return directory


def _draw(
    logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """One token drawn from softmax(``logits`` [V] / temperature) restricted to the smallest
    set of most likely tokens whose mass reaches ``top_p`` (the nucleus; the first always
    stays), drawn on the CPU so that a seeded ``generator`` gives the same token anywhere."""
    probs = torch.softmax(logits.cpu().double() / temperature, -1)
    order = torch.argsort(probs, descending=True, stable=True)
    sorted_p = probs[order]
    keep = (sorted_p.cumsum(0) - sorted_p) < top_p  # mass before the token is below top_p
    keep[0] = True
    kept = sorted_p * keep
    return int(order[torch.multinomial(kept / kept.sum(), 1, generator=generator)])


def build_hf_causal_lm(
    name: str,
    num_classes: int | None = None,
    pretrained: bool = True,
    config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> HFCausalLM:
    """The ``hf:<name>`` causal LM; ``num_classes`` is the shared vocabulary (the tokenizer's
    size) its logits are cut to. ``pretrained=False`` builds random weights from the config;
    ``config`` overrides its fields; other ``kwargs`` go to ``from_pretrained``."""
    transformers = _require_transformers()
    path = locate(name)
    try:
        cfg = transformers.AutoConfig.from_pretrained(path, **dict(config or {}))
    except (OSError, ValueError) as exc:
        raise JobError(f"hf:{name}: cannot read its config: {exc}") from None
    auto = transformers.AutoModelForCausalLM
    if pretrained:
        model = load_pretrained(auto, name, path, cfg, **kwargs)
    else:
        try:
            model = auto.from_config(cfg, **kwargs)
        except ValueError as exc:  # a config of a model with no causal LM head
            raise JobError(f"hf:{name}: not a causal language model: {exc}") from None
    return HFCausalLM(model, source=path, vocab=num_classes)
