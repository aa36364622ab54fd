"""Training losses of the multi-exit objectives, as small pure functions of logits and labels.

Every loss returns one value per sample (shape `(B,)`) so that the trainers can normalise by the number of samples
in the whole (accumulated, distributed) batch, and computes in fp32, whatever the logits' dtype and also inside an
autocast region. Notation of `ALGORITHMS.md`: `z_i` logits of exit `i`, `p_i^T = softmax(z_i / T)`, `sg`
stop-gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .models.multiexit_bert.exit_strategies import REGRESSION
from .models.multiexit_bert.modeling_multiexit_bert import exit_loss

KD_REDUCTIONS = ("batchmean", "released")


def task_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """`CE(z, y)` per sample (BCE averaged over labels for multi-label, squared error for regression)."""
    return exit_loss(logits, labels, problem_type, logits.shape[-1], reduction="none")


def weighted_exit_loss(
    all_logits: Sequence[torch.Tensor], labels: torch.Tensor, problem_type: str, weights: Sequence[float]
) -> torch.Tensor:
    """`sum_j w_j CE(z_j, y) / sum_j w_j` (PABEE, Zhou et al. 2020, uses `w_j = j`)."""
    if len(weights) != len(all_logits):
        raise ValueError(f"{len(weights)} exit weights for {len(all_logits)} exits; give one weight per exit.")
    total = float(sum(weights))
    return sum(w / total * task_loss(z, labels, problem_type) for w, z in zip(weights, all_logits))


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    problem_type: str,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """`T^2 KL(sg(p_teacher^T) || p_student^T)` per sample (Hinton et al. 2015), the teacher detached.

    `reduction="released"` divides by the number of classes `C`, as RomeBERT's released code does by applying
    `nn.KLDivLoss(reduction="mean")` (a mean over batch *and* classes). For regression the soft target is the
    teacher's value: `(z_student - sg(z_teacher))^2` (temperature does not apply).
    """
    if reduction not in KD_REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not one of {list(KD_REDUCTIONS)}.")
    teacher = teacher.detach().float()
    student = student.float()
    if problem_type == REGRESSION:
        return (student - teacher).squeeze(-1) ** 2
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1) * temperature**2
    return kl / student.shape[-1] if reduction == "released" else kl


def mutual_distillation_terms(
    all_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    problem_type: str,
    temperature: float,
    teacher_logits: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """The `M^2` loss terms of LeeBERT (Zhu, ACL 2021), per sample, as a `(B, M^2)` matrix: columns `0..M-1` are
    `CE(z_m, y)`, then for every student `m` and every other exit `n != m` (row-major, `n` ascending)
    `T^2 KL(sg(p_n^T) || p_m^T)`. The weighted objective is `terms @ w` (see `mutual_distillation_pairs`).
    `teacher_logits` (default `all_logits`) are the teachers' logits, e.g. from other weights than the students'."""
    teachers = all_logits if teacher_logits is None else teacher_logits
    ce = [task_loss(z, labels, problem_type) for z in all_logits]
    kd = [
        distillation_loss(all_logits[m], teachers[n], temperature, problem_type)
        for m, n in mutual_distillation_pairs(len(all_logits))
    ]
    return torch.stack(ce + kd, dim=-1)


def mutual_distillation_pairs(num_exits: int) -> list[tuple[int, int]]:
    """`(student, teacher)` exit indices of the distillation columns of `mutual_distillation_terms`, in order."""
    return [(m, n) for m in range(num_exits) for n in range(num_exits) if n != m]


def chained_distillation_loss(
    all_logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    problem_type: str,
    teachers: Sequence[int],
    gamma: float,
    temperature: float,
) -> torch.Tensor:
    """`CE(z_L, y) + sum_{i<L} [ (1 - gamma) CE(z_i, y) + gamma T^2 KL(sg(p_{t(i)}^T) || p_i^T) ]` per sample, where
    `teachers[i] = t(i)` is the (deeper) exit that exit `i` learns from: `t(i) = i + 1` is layer-wise distillation
    (Gu et al., IJSEKE 2023), `t(i) = L` last-layer ("vanilla") self-distillation."""
    if len(teachers) != len(all_logits) - 1:
        raise ValueError(f"{len(teachers)} teachers for {len(all_logits) - 1} intermediate exits; give one per exit.")
    final = task_loss(all_logits[-1], labels, problem_type)
    return final + sum(
        (1 - gamma) * task_loss(z, labels, problem_type)
        + gamma * distillation_loss(z, all_logits[t], temperature, problem_type)
        for z, t in zip(all_logits[:-1], teachers)
    )


def token_info_nce(
    anchor: torch.Tensor, positive: torch.Tensor, attention_mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Token-level InfoNCE between two views `a`, `b` `(B, S, d)` of the same sequences (SmartBERT's cross-layer
    contrast, Hu et al., IJCAI 2023): token `t`'s positive is the same token in the other view, its negatives the
    other non-padding tokens of the same sequence,

        l_t = -log( exp(cos(a_t, b_t) / tau) / sum_{s not padding} exp(cos(a_t, b_s) / tau) ),

    averaged over the sample's non-padding tokens `t`. Padding is neither an anchor nor a negative (the released
    code counts it as both). Returns `(B,)`."""
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0.")
    a = F.normalize(anchor.float(), dim=-1)
    b = F.normalize(positive.float(), dim=-1)
    valid = attention_mask.bool()
    # In fp32 also inside an autocast region (e.g. `accelerator.autocast()` around a loss), which would run the
    # product in half precision.
    with torch.autocast(a.device.type, enabled=False):
        cosine = a @ b.transpose(1, 2)
    # Finite fill, not -inf: padded anchors' rows would otherwise give inf - inf = NaN (and NaN gradients).
    scores = (cosine / temperature).masked_fill(~valid[:, None, :], torch.finfo(torch.float32).min)
    log_prob = scores.diagonal(dim1=1, dim2=2) - scores.logsumexp(dim=-1)
    per_token = torch.where(valid, -log_prob, torch.zeros_like(log_prob))
    return per_token.sum(-1) / valid.sum(-1).clamp_min(1)


def skip_reward(gate_probs: Sequence[torch.Tensor], coefficient: float, reference_layers: int | None = None) -> torch.Tensor:
    """SmartBERT's skipping term `lambda / sum_i mean_b(g_i)` over the `n` layers' gate probabilities `g_i` `(B,)`
    (Hu et al., IJCAI 2023, as released): small when gates open, so it pushes layers to be skipped. It is a
    batch-level quantity (the batch mean sits inside the reciprocal), returned repeated for every sample so that
    the trainers' per-sample mean gives back its value.

    Its pull on one gate, `-lambda / (sum_i mean_b(g_i))^2`, grows as `1/n^2` as the model gets shallower. With
    `reference_layers` `n_ref`, `lambda` is scaled by `(n / n_ref)^2`, so that every gate is pulled as in an
    `n_ref`-layer model whatever `n` is (the same term at `n = n_ref`)."""
    total = torch.stack([g.float().mean() for g in gate_probs]).sum()
    if reference_layers is not None:
        coefficient = coefficient * (len(gate_probs) / reference_layers) ** 2
    return (coefficient / total).expand(gate_probs[0].shape[0])


def project_conflicting(g_b: torch.Tensor, g_a: torch.Tensor) -> torch.Tensor:
    """Gradient projection (RomeBERT's released `--gp`, after PCGrad, Yu et al. 2020): if `<g_B, g_A> < 0`,
    `g_B <- g_B - (<g_B, g_A> / ||g_A||^2) g_A`, removing the component of `g_B` that opposes `g_A`."""
    dot = torch.dot(g_b, g_a)
    if dot >= 0:
        return g_b
    return g_b - dot / torch.dot(g_a, g_a).clamp_min(torch.finfo(g_a.dtype).tiny) * g_a


__all__ = [
    "KD_REDUCTIONS",
    "chained_distillation_loss",
    "distillation_loss",
    "mutual_distillation_pairs",
    "mutual_distillation_terms",
    "project_conflicting",
    "skip_reward",
    "task_loss",
    "token_info_nce",
    "weighted_exit_loss",
]
