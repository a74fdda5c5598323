"""Token-level losses against dense autograd references (Ray-free)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raydistill.distill.token_losses import (
    TopKTargets,
    divergence,
    next_token_ce,
    token_agreement,
    token_distill_loss,
)
from raydistill.teacher.topk_codec import TokenTopKCodec

B, L, V = 3, 7, 11


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = (2 * torch.randn(B, L, V, generator=g)).requires_grad_(True)
    teacher = 3 * torch.randn(B, L, V, generator=g) + 40.0  # an offset changes nothing
    mask = torch.rand(B, L, generator=g) > 0.3
    mask[0, 0] = True
    return student, teacher, mask


def _reference(student, teacher, mask, kind, temperature, beta=0.5):
    """The textbook formulas on full tensors, per token, then the masked mean times T^2."""
    p = F.softmax(teacher / temperature, -1)
    q = F.softmax(student / temperature, -1)
    if kind == "forward_kl":
        per = (p * (p.log() - q.log())).sum(-1)
    elif kind == "reverse_kl":
        per = (q * (q.log() - p.log())).sum(-1)
    else:
        m = beta * p + (1 - beta) * q
        per = beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)
    return (per * mask).sum() / mask.sum() * temperature**2


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_each_loss_and_its_gradient_match_the_dense_reference(kind, temperature):
    student, teacher, mask = _inputs()
    got = token_distill_loss(student, teacher, mask, kind, temperature, beta=0.3, chunk_tokens=4)
    (g_got,) = torch.autograd.grad(got, student)
    want = _reference(student, teacher, mask, kind, temperature, beta=0.3)
    (g_want,) = torch.autograd.grad(want, student)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert got.item() > 0.01
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-6)
    # masked-out positions get no gradient
    assert g_got[~mask].abs().max().item() == 0.0


def test_chunked_equals_unchunked_in_value_and_gradient():
    student, teacher, mask = _inputs(1)
    values, grads = [], []
    for chunk in (1, 3, 10_000):
        loss = token_distill_loss(student, teacher, mask, "jsd", 2.0, beta=0.5, chunk_tokens=chunk)
        values.append(loss.item())
        grads.append(torch.autograd.grad(loss, student)[0])
    assert values[0] == pytest.approx(values[2], rel=1e-6)
    assert values[1] == pytest.approx(values[2], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[2])
    torch.testing.assert_close(grads[1], grads[2])


def test_jsd_at_beta_0_and_1_is_forward_and_reverse_kl_and_tends_to_them():
    student, teacher, mask = _inputs(2)
    fwd = token_distill_loss(student, teacher, mask, "forward_kl")
    rev = token_distill_loss(student, teacher, mask, "reverse_kl")
    assert token_distill_loss(student, teacher, mask, "jsd", beta=0.0).item() == fwd.item()
    assert token_distill_loss(student, teacher, mask, "jsd", beta=1.0).item() == rev.item()
    assert abs(fwd.item() - rev.item()) > 0.01  # the two ends really differ
    # the endpoints are the limits of the mixed form, scaled by beta (1 - beta)
    small = token_distill_loss(student, teacher, mask, "jsd", beta=1e-4).item() / 1e-4
    large = token_distill_loss(student, teacher, mask, "jsd", beta=1 - 1e-4).item() / 1e-4
    assert small == pytest.approx(fwd.item(), rel=1e-2)
    assert large == pytest.approx(rev.item(), rel=1e-2)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_a_student_equal_to_the_teacher_costs_nothing(kind):
    _, teacher, mask = _inputs(3)
    student = (teacher - 40.0).clone().requires_grad_(True)
    loss = token_distill_loss(student, teacher, mask, kind, temperature=3.0)
    assert abs(loss.item()) < 1e-5
    codec = TokenTopKCodec(k=4, vocab_size=V)
    top = codec.targets(codec.encode(teacher))
    assert abs(token_distill_loss(student, top, mask, kind).item()) < 1e-3


def _topk(teacher, k):
    codec = TokenTopKCodec(k=k, vocab_size=V)
    return codec.targets(codec.encode(teacher.double()))


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_top_k_with_a_tail_is_a_lower_bound_of_the_dense_loss_at_t1(kind):
    student, teacher, mask = _inputs(4)
    dense = token_distill_loss(student, teacher, mask, kind).item()
    previous = -1.0
    for k in (1, 3, 6, V - 1):
        bucket = token_distill_loss(student, _topk(teacher, k), mask, kind).item()
        # exact for exact values; the stored log-probabilities are float16 (rel. error ~1e-3)
        assert 0 <= bucket <= dense * (1 + 1e-3), k
        if kind == "forward_kl":  # refining the buckets never lowers the divergence
            assert bucket >= previous - 1e-3
            previous = bucket
    # with every token kept there is no tail: the top-k loss is the dense one (fp16 storage)
    full = token_distill_loss(student, _topk(teacher, V), mask, kind).item()
    assert full == pytest.approx(dense, rel=2e-3)


def test_the_forward_kl_gap_of_the_tail_bucket_is_tail_mass_times_the_tails_kl():
    student, teacher, mask = _inputs(5)
    k = 4
    top = TokenTopKCodec(k=k, vocab_size=V).encode(teacher.double())
    ids = torch.as_tensor(top["teacher_token_topk_ids"].astype("int64"))
    # the exact values (float64) so the identity holds to rounding, not to fp16 storage
    log_p = F.log_softmax(teacher.double(), -1)
    exact = TopKTargets(
        ids=ids,
        logprobs=log_p.gather(-1, ids),
        log_tail=torch.log1p(-log_p.gather(-1, ids).exp().sum(-1)),
        vocab_size=V,
    )
    s = student.detach().double()
    gap_per_token = []
    log_q = F.log_softmax(s, -1)
    outside = torch.ones_like(log_p, dtype=torch.bool).scatter(-1, ids, False)
    for b in range(B):
        for t in range(L):
            keep = outside[b, t]
            p_tail, q_tail = log_p[b, t][keep], log_q[b, t][keep]
            mass = p_tail.exp().sum()
            pt = p_tail - mass.log()
            qt = q_tail - torch.logsumexp(q_tail, 0)
            gap_per_token.append(mass * (pt.exp() * (pt - qt)).sum())
    gap = (torch.stack(gap_per_token).reshape(B, L) * mask).sum() / mask.sum()
    dense = token_distill_loss(s, teacher.double(), mask, "forward_kl").item()
    bucket = token_distill_loss(s, exact, mask, "forward_kl").item()
    assert gap.item() > 1e-3
    assert dense - bucket == pytest.approx(gap.item(), rel=1e-4)


def test_the_tail_bucket_at_t_above_1_lies_inside_its_stated_bounds():
    """The bucket's tempered tail weight (even spread) is the upper end of what the true tail
    can weigh at T; the whole tail on one token is the lower end."""
    _, teacher, _ = _inputs(6)
    k, temperature = 3, 2.0
    log_p = F.log_softmax(teacher.double(), -1).reshape(-1, V)
    top = log_p.topk(k, -1)
    outside = torch.ones_like(log_p, dtype=torch.bool).scatter(-1, top.indices, False)
    true_weight = torch.where(outside, log_p / temperature, -math.inf).logsumexp(-1)
    log_mass = torch.where(outside, log_p, -math.inf).logsumexp(-1)
    n = V - k
    upper = math.log(n) + (log_mass - math.log(n)) / temperature
    lower = log_mass / temperature
    assert torch.all(true_weight <= upper + 1e-9) and torch.all(true_weight >= lower - 1e-9)
    assert torch.any(true_weight < upper - 1e-3)  # the bound is not the value itself


def test_next_token_cross_entropy_matches_the_reference_on_masked_positions():
    student, _, mask = _inputs(7)
    targets = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(7))
    got = next_token_ce(student, targets, mask, chunk_tokens=2)
    labels = torch.where(mask, targets, torch.full_like(targets, -100))
    want = F.cross_entropy(student.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(got, student)[0], torch.autograd.grad(want, student)[0]
    )


def test_hidden_states_with_a_head_give_the_loss_of_the_logits():
    torch.manual_seed(8)
    hidden = torch.randn(B, L, 5, requires_grad=True)
    head = torch.nn.Linear(5, V, bias=False)
    _, teacher, mask = _inputs(8)
    via_head = token_distill_loss(
        hidden, teacher, mask, "reverse_kl", 2.0, head=head, chunk_tokens=3
    )
    via_logits = token_distill_loss(head(hidden), teacher, mask, "reverse_kl", 2.0)
    assert via_head.item() == pytest.approx(via_logits.item(), rel=1e-6)
    via_head.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_an_empty_mask_gives_zero_and_bad_arguments_are_refused():
    student, teacher, mask = _inputs(9)
    none = torch.zeros_like(mask)
    assert token_distill_loss(student, teacher, none).item() == 0.0
    with pytest.raises(ValueError, match="mask must have shape"):
        token_distill_loss(student, teacher, mask[:, :-1])
    with pytest.raises(ValueError, match="kind must be one of"):
        token_distill_loss(student, teacher, mask, "kl")
    with pytest.raises(ValueError, match="beta must be in"):
        divergence(torch.zeros(1, 2), torch.zeros(1, 2), "jsd", 1.5)
    with pytest.raises(ValueError, match="teacher vocabulary 10 != student 11"):
        token_distill_loss(student, teacher[..., :10], mask)


def test_agreement_counts_matching_argmaxes_on_selected_positions_only():
    _, teacher, mask = _inputs(10)
    student = teacher.clone()
    assert token_agreement(student, teacher, mask).item() == mask.sum().item()
    assert token_agreement(student, _topk(teacher, 2), mask).item() == mask.sum().item()
    worse = student.clone()
    worse[0, 0] = -worse[0, 0]
    assert token_agreement(worse, teacher, mask).item() == mask.sum().item() - 1
