"""Curriculum learning over training samples: difficulty scorers, pacing functions, a resumable sampler and the
callback that keeps the curriculum in checkpoints.

A curriculum sorts the training set from easy to hard (a difficulty scorer) and, at optimizer step `t`, draws
the step's samples uniformly from the easiest `c(t)` fraction (a pacing function), as in competence-based
curriculum learning (Platanios et al., NAACL 2019), the sample-level half of Gu et al. (IJSEKE 2023).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..losses import task_loss
from ..models.multiexit_bert.exit_strategies import REGRESSION

# ----------------------------------------------------------------------------------------------- pacing


def sqrt_competence(step: int, total: int, initial: float, buckets: int) -> float:
    """`c(t) = min(1, sqrt(t (1 - c0^2) / T + c0^2))` (Platanios et al. 2019): the pool grows fast, then slowly."""
    return min(1.0, math.sqrt(step * (1 - initial**2) / total + initial**2))


def linear_competence(step: int, total: int, initial: float, buckets: int) -> float:
    """`c(t) = min(1, t (1 - c0) / T + c0)` (Platanios et al. 2019)."""
    return min(1.0, step * (1 - initial) / total + initial)


def baby_steps(step: int, total: int, initial: float, buckets: int) -> float:
    """Baby steps (Spitkovsky et al. 2010; Cirik et al. 2016): `K` equal difficulty buckets, one more joining the
    pool every `T / K` steps: `c(t) = min(1, (floor(t K / T) + 1) / K)`."""
    return min(1.0, (math.floor(step * buckets / total) + 1) / buckets)


PACING_FUNCTIONS: dict[str, Callable[[int, int, float, int], float]] = {
    "sqrt": sqrt_competence,
    "linear": linear_competence,
    "baby_steps": baby_steps,
}
"""`pacing(t, T, c0, K)`: the fraction of the sorted training set available at optimizer step `t`; 1 from `T` on."""

# ----------------------------------------------------------------------------------------------- difficulty


@dataclass(frozen=True)
class DifficultyScorer:
    """`score(all_logits (N, E, C), labels (N,), lengths (N,), problem_type, exit_layers (E,)) -> (N,)`
    difficulties (higher is harder); `needs_warmup`: the scores come from a model trained for a warm-up stage
    first."""

    score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str, Sequence[int]], torch.Tensor]
    needs_warmup: bool


def _exit_losses(all_logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """`(N, E)` task losses of every exit."""
    return torch.stack([task_loss(all_logits[:, e], labels, problem_type) for e in range(all_logits.shape[1])], 1)


def depth_weighted_loss_difficulty(all_logits, labels, lengths, problem_type, exit_layers) -> torch.Tensor:
    """The warm-up model's task losses weighted by depth, `sum_e (l_e / sum_k l_k) loss_e` (`l_e` the exit's layer,
    PABEE's weights): every exit counts, since every exit trains on the curriculum, but the deep exits, which make
    most predictions and fit the data best, count most (on six layers the top three hold 15/21 of the weight). In
    the plain mean (`loss`) the shallow exits, whose losses stay near chance for most samples, weigh as much as the
    final one, so the order is mostly the shallow exits' fit."""
    depth = torch.tensor([float(layer) for layer in exit_layers])
    return _exit_losses(all_logits, labels, problem_type) @ (depth / depth.sum())


def loss_difficulty(all_logits, labels, lengths, problem_type, exit_layers) -> torch.Tensor:
    """The warm-up model's task loss averaged over its exits: hard = wrong or unsure at many exits."""
    return _exit_losses(all_logits, labels, problem_type).mean(1)


def first_correct_exit_difficulty(all_logits, labels, lengths, problem_type, exit_layers) -> torch.Tensor:
    """The first exit (1-based) at which the warm-up model is right, `E + 1` when none is; ties (most samples
    share an exit) are broken by the mean exit loss, mapped into `[0, 1)` by `l / (1 + l)`."""
    if problem_type == REGRESSION:
        raise ValueError("difficulty_scorer='first_correct_exit' needs a classification task; use 'loss' or 'length'.")
    correct = all_logits.argmax(-1) == labels[:, None]
    exits = all_logits.shape[1]
    first = torch.where(correct.any(1), correct.float().argmax(1) + 1, torch.full_like(labels, exits + 1)).float()
    loss = _exit_losses(all_logits, labels, problem_type).mean(1)
    return first + loss / (1 + loss)


def length_difficulty(all_logits, labels, lengths, problem_type, exit_layers) -> torch.Tensor:
    """The number of tokens: longer inputs are harder (no warm-up model needed)."""
    return lengths.float()


SAMPLING_MODES = ("pass", "independent")
"""How `CurriculumSampler` draws from the pool: a pass without replacement, or each step on its own."""

DIFFICULTY_SCORERS: dict[str, DifficultyScorer] = {
    "depth_weighted_loss": DifficultyScorer(depth_weighted_loss_difficulty, needs_warmup=True),
    "loss": DifficultyScorer(loss_difficulty, needs_warmup=True),
    "first_correct_exit": DifficultyScorer(first_correct_exit_difficulty, needs_warmup=True),
    "length": DifficultyScorer(length_difficulty, needs_warmup=False),
}


def difficulty_order(scores: torch.Tensor) -> list[int]:
    """Sample indices from easiest to hardest (stable: equal scores keep dataset order)."""
    return torch.argsort(scores, stable=True).tolist()


# ----------------------------------------------------------------------------------------------- sampler


class CurriculumSampler(Sampler[int]):
    """Yields one epoch of `num_samples` indices, optimizer step by optimizer step: step `t` takes `batch_size x
    batches_per_step` samples (the last step of an epoch: the rest) from the pool, the easiest
    `max(batch_size x batches_per_step, ceil(c(t) N))` samples of `order`.

    `sampling="pass"` (default) goes through the pool without replacement: a pass is a random order of the pool,
    steps take its next samples, samples that join the pool as competence grows join the current pass at random
    places, and a new pass starts when one is used up, so every sample of the pool is seen once before any is seen
    twice (an epoch with the whole set in the pool sees every sample). `sampling="independent"` draws each step on its
    own (uniform without replacement within the step), as competence-based curriculum learning states it (Platanios
    et al., 2019); with a full pool an epoch then sees only about 1 - 1/e = 63% of the set.

    `batches_per_step` = gradient accumulation steps x processes: accelerate deals consecutive batches of
    `batch_size` out to the processes in turn, so each process and micro-step trains on its slice of the step's
    draw, and the union over processes is the draw of one process with `batches_per_step` times the batch (drawing
    each batch on its own would give every process other samples). The indices depend only on
    `(seed, epoch, order)`, so Trainer's resume, which sets the epoch and skips the batches already trained,
    continues at exactly the same position. `order` is computed on first use by `order_fn` unless the curriculum
    callback restored it from a checkpoint.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        batches_per_step: int,
        competence: Callable[[int], float],
        seed: int,
        order_fn: Callable[[], Sequence[int]],
        sampling: str = "pass",
    ):
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling={sampling!r} is not one of {list(SAMPLING_MODES)}.")
        self.sampling = sampling
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.batches_per_step = batches_per_step
        self.competence = competence
        self.seed = seed
        self.order_fn = order_fn
        self.order: list[int] | None = None
        self.epoch = 0

    @property
    def step_size(self) -> int:
        """Samples per optimizer step, over all processes and micro-steps."""
        return self.batch_size * self.batches_per_step

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def pool_size(self, step: int) -> int:
        """How many of the easiest samples optimizer step `step` draws from."""
        return min(self.num_samples, max(self.step_size, math.ceil(self.competence(step) * self.num_samples)))

    def __iter__(self) -> Iterator[int]:
        if self.order is None:
            self.order = [int(i) for i in self.order_fn()]
        if len(self.order) != self.num_samples:
            raise ValueError(f"The curriculum orders {len(self.order)} samples but the training set has "
                             f"{self.num_samples}; resume with the training set the checkpoint was trained on.")
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.tensor(self.order)
        steps_per_epoch = math.ceil(self.num_samples / self.step_size)
        pending: list[int] = []  # "pass": positions in `order` the current pass has not taken yet
        joined = 0  # "pass": pool size the pending positions were drawn from
        for step in range(steps_per_epoch):
            size = min(self.step_size, self.num_samples - step * self.step_size)
            pool = self.pool_size(self.epoch * steps_per_epoch + step)
            if self.sampling == "independent":
                yield from order[torch.randperm(pool, generator=generator)[:size]].tolist()
                continue
            if pool > joined:  # the newly admitted samples join the current pass at random places
                pending = _interleave(pending, (joined + torch.randperm(pool - joined, generator=generator)).tolist(), generator)
                joined = pool
            taken = pending[:size]
            pending = pending[size:]
            if len(taken) < size:  # the pass is used up: a new one, without the samples this step already has
                in_step = set(taken)
                fresh = [i for i in torch.randperm(pool, generator=generator).tolist() if i not in in_step]
                pending = fresh[size - len(taken):] + taken  # this step's early samples end the new pass
                taken += fresh[: size - len(taken)]
            yield from order[taken].tolist()


def _interleave(first: list[int], second: list[int], generator: torch.Generator) -> list[int]:
    """The two lists merged at random places, each keeping its own order."""
    slots = set(torch.randperm(len(first) + len(second), generator=generator)[: len(second)].tolist())
    rest, inserted = iter(first), iter(second)
    return [next(inserted) if position in slots else next(rest) for position in range(len(first) + len(second))]


def find_sampler(dataloader) -> CurriculumSampler | None:
    """The `CurriculumSampler` inside a (possibly accelerate-wrapped or batch-skipping) training dataloader."""
    pending, seen = [dataloader], set()
    while pending:
        obj = pending.pop()
        if isinstance(obj, CurriculumSampler):
            return obj
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        pending += [getattr(obj, name, None) for name in ("sampler", "batch_sampler", "base_dataloader")]
    return None


class CurriculumCallback(TrainerCallback, ExportableState):
    """Keeps the curriculum's sample order in every checkpoint's `trainer_state.json` (`stateful_callbacks`).

    At the start of training it hands the order to the training dataloader's `CurriculumSampler`: the order stored
    in the checkpoint being resumed when there is one (so warm-up scores are not recomputed from other weights),
    else its own. Together with the sampler's determinism in `(seed, epoch)` and Trainer's batch skipping, a resumed
    run sees the same batches, in the same order, as an uninterrupted one.
    """

    def __init__(self, order: list[int] | None = None):
        self.order = order
        self.sampler: CurriculumSampler | None = None

    def state(self) -> dict:
        order = self.sampler.order if self.sampler is not None and self.sampler.order is not None else self.order
        return {"args": {"order": order}, "attributes": {}}

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.sampler = find_sampler(train_dataloader)
        stored = state.stateful_callbacks.get(type(self).__name__) if state.stateful_callbacks else None
        if isinstance(stored, list):
            stored = stored[0] if stored else None
        order = (stored or {}).get("args", {}).get("order") or self.order
        if self.sampler is not None and order is not None:
            self.sampler.order = list(order)
