"""The ``lm`` section: what a ``task: causal_lm`` job trains on and how its tokens are distilled.

The temperature and alpha schedules are ``distill``'s, as for classification; this section adds
what only language models have: the row format, the token-level divergence and its chunking.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raydistill.config.base import Section


class GenerateConfig(Section):
    """``distill.teacher_pass: generate``: how the teacher pool answers the train prompts
    (sequence-level KD). Each answer is drawn with its own seed (the job's ``seed``, the
    prompt's ``row_id`` and the sample's index), so a rerun writes the same rows."""

    max_new_tokens: int = Field(
        64, ge=1, description="most tokens per answer (also cut to the row: max_length - prompt)"
    )
    temperature: float = Field(0.0, ge=0, description="0: greedy (argmax); > 0: sampled")
    top_p: float = Field(
        1.0, gt=0, le=1, description="sampled: draw from the nucleus holding this much mass"
    )
    samples_per_prompt: int = Field(
        1, ge=1, description="answers per prompt, each a train row (greedy: use 1)"
    )
    logits: bool = Field(
        False,
        description="true: the same actors score each answer and ship its per-token teacher"
        " distribution (lm.topk) for the token divergence; false: next-token CE on the answers"
        " alone (distill.alpha must be 0)",
    )


class LMConfig(Section):
    """Causal language-model distillation (``task: causal_lm``).

    Rows are ``data.text.max_length`` tokens: plain text (``format: text``, documents packed
    back to back, each closed by the tokenizer's end-of-sequence token) or one prompt/response
    pair per row (``format: prompt_response``, a ``.jsonl`` whose loss covers only the
    response). The objective per target token is ``alpha * T^2 * D(teacher_T || student_T) +
    (1 - alpha) * CE(next token)`` with ``D`` the chosen divergence.
    """

    format: Literal["text", "prompt_response"] = Field(
        "text",
        description="text: documents packed into rows (data.text.column of jsonl/parquet, or"
        " every .txt under a folder); prompt_response: a .jsonl of pairs, loss on the response",
    )
    prompt_field: str = Field("prompt", description="prompt_response: the prompt's field")
    response_field: str = Field("response", description="prompt_response: the response's field")
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl",
        description="the token divergence: forward_kl KL(teacher||student), reverse_kl"
        " KL(student||teacher), jsd the generalized Jensen-Shannon divergence with `beta`",
    )
    beta: float = Field(
        0.5, ge=0, le=1, description="jsd: the mixing weight (0: forward KL, 1: reverse KL)"
    )
    topk: int | None = Field(
        None,
        ge=1,
        description="the teacher pool ships per token its top-k ids, log-probabilities and the"
        " tail mass (k * (2 or 4) + 4 bytes); null: dense float32 logits (4 * V bytes)",
    )
    chunk_tokens: int = Field(
        1024, ge=1, description="tokens per chunk of the loss (bounds its softmax memory)"
    )
    generate: GenerateConfig = Field(
        default_factory=GenerateConfig,
        description="distill.teacher_pass generate: how the teacher pool answers train prompts",
    )
