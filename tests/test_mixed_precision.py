"""Mixed precision training of every method: one optimizer step under fp16 with a GradScaler, and under bf16, moves
the weights as the fp32 step does, and an fp16 step whose scaled gradients overflow is skipped without harming the
steps after it.

fp16 runs what accelerate sets up for `--fp16` on a GPU (autocast around the model's forward, the loss scaled by a
GradScaler in backward, the gradients unscaled before clipping and the step, overflowing steps skipped); accelerate
does not set up either on CPU, so the tests add the two pieces it leaves out, on CPU. The scale, 2^16, is
GradScaler's default: a gradient that misses it is off by that factor.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerCallback

from hf_multiexit.losses import token_info_nce
from hf_multiexit.trainers import LeeBertConfig, LeeBertTrainer, SmartBertTrainer, get_method
from test_trainers import ToyTask, toy_args, toy_model
from toy_training import MODEL_OPTIONS

INIT_SCALE = 2.0**16
# Relative error of the update against fp32's, over the model's parameters and over the trainer's own. Measured
# with the fixes: at most 0.005 under fp16 and 0.033 under bf16 (8 significant bits).
TOLERANCES = {"fp16": 0.01, "bf16": 0.05}
# LeeBERT's learned weights (weight_scheme "joint") take the step of the distillation logits alone, whose gradient is
# w_i (t_i - sum_j w_j t_j) over distillation terms of like size: a difference that loses a further ~3 bits of the
# bf16 forward's terms. Measured: 0.0044 under fp16, 0.068 under bf16 (the model's own update: 0.0036 and 0.025).
TRAINER_TOLERANCES = {("leebert-clo", "bf16"): 0.1}

# case -> (method, method options)
CASES: dict[str, tuple[str, dict]] = {
    "deebert": ("deebert", {}),
    "pabee": ("pabee", {}),
    "romebert-gp": ("romebert", {"gradient_regularization": "gp"}),
    "romebert-ge": ("romebert", {"gradient_regularization": "ge"}),
    "leebert-clo": ("leebert", {"bilevel_split": 0.5}),  # cross-level optimisation on: D1 and D2 of 8 each
    "smartbert": ("smartbert", {}),
    "curriculum": ("curriculum", {}),  # a warm-up stage, then the loss-scored curriculum
}


def build_trainer(case, tmp_path, precision, scaler=None, **overrides):
    """The case's trainer for one plain-SGD step (per stage) on one batch of 8, in `precision` (fp32, fp16, bf16).
    The batch (ToyTask seed 1) is one on which RomeBERT's two gradients conflict, so that its projection acts."""
    method, options = CASES[case]
    config_class, trainer_class = get_method(method)
    values = dict(optim="sgd", learning_rate=0.5, max_steps=1, fp16=precision == "fp16", bf16=precision == "bf16")
    args = toy_args(config_class, tmp_path, **{**values, **options, **overrides})
    data = ToyTask(16 if method == "leebert" else 8, seed=1)
    trainer = trainer_class(model=toy_model(**MODEL_OPTIONS.get(method, {})), args=args, train_dataset=data)
    if precision == "fp16":
        trainer.accelerator.native_amp = True  # autocast to fp16 around the model's forward
        trainer.accelerator.scaler = scaler or torch.amp.GradScaler("cpu", init_scale=INIT_SCALE)
    return trainer


def trained_parameters(trainer) -> dict[str, torch.Tensor]:
    """The model's parameters (`model.*`) and those the trainer owns (`trainer.*`)."""
    named = {f"model.{name}": p for name, p in trainer.model.named_parameters()}
    if isinstance(trainer, LeeBertTrainer):
        named["trainer.loss_weight_logits"] = trainer.loss_weight_logits
    if isinstance(trainer, SmartBertTrainer):
        named.update({f"trainer.projections.{name}": p for name, p in trainer.projections.named_parameters()})
    return named


def snapshot(trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trained_parameters(trainer).items()}


def train_updates(trainer) -> dict[str, torch.Tensor]:
    start = snapshot(trainer)
    trainer.train()
    return {name: value - start[name] for name, value in snapshot(trainer).items()}


def relative_errors(updates, reference) -> dict[str, float]:
    """`||u - u_ref|| / ||u_ref||` over the model's parameters and over the trainer's own (where it has some)."""
    errors = {}
    for group in ("model", "trainer"):
        names = [name for name in reference if name.startswith(f"{group}.")]
        if names:
            got = torch.cat([updates[name].flatten() for name in names])
            expected = torch.cat([reference[name].flatten() for name in names])
            errors[group] = float((got - expected).norm() / expected.norm())
    return errors


@pytest.fixture(scope="module")
def fp32_updates(tmp_path_factory):
    cache = {}

    def updates(case):
        if case not in cache:
            cache[case] = train_updates(build_trainer(case, tmp_path_factory.mktemp(case), "fp32"))
        return cache[case]

    return updates


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("case", CASES)
def test_mixed_precision_step_matches_fp32(case, precision, tmp_path, fp32_updates):
    reference = fp32_updates(case)
    trainer = build_trainer(case, tmp_path, precision)
    updates = train_updates(trainer)
    if precision == "fp16":
        assert trainer.accelerator.scaler.get_scale() == INIT_SCALE  # no step was skipped for an overflow
    errors = relative_errors(updates, reference)
    assert errors["model"] < TOLERANCES[precision], errors
    assert errors.get("trainer", 0.0) < TRAINER_TOLERANCES.get((case, precision), TOLERANCES[precision]), errors


def test_romebert_case_projects(tmp_path, fp32_updates):
    """The projection changes the step on the test batch (by 13%) far beyond the fp16 tolerance, so the fp16 test of
    RomeBERT's `gp` checks the projected gradient, not only the plain sum."""
    plain = train_updates(build_trainer("romebert-gp", tmp_path, "fp32", gradient_regularization="none"))
    assert relative_errors(plain, fp32_updates("romebert-gp"))["model"] > 5 * TOLERANCES["fp16"]


class RecordFirstStep(TrainerCallback):
    def __init__(self, trainer):
        self.trainer, self.after_first_step = trainer, None

    def on_step_end(self, args, state, control, **kwargs):
        if self.after_first_step is None:
            self.after_first_step = snapshot(self.trainer)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_overflowing_fp16_step_is_skipped_and_the_next_one_trains(case, tmp_path):
    """A scale of 2^46 overflows the fp16 backward: the GradScaler must skip that step (nothing moves, the method's
    own gradient surgery included) and back off, here straight to 2^16, at which the next step trains. Gradients
    of the skipped step left behind (e.g. in trainer-owned parameters) would make the next step overflow too."""
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**46, backoff_factor=2.0**-30)
    trainer = build_trainer(case, tmp_path, "fp16", scaler=scaler, max_steps=2)
    record = RecordFirstStep(trainer)
    trainer.add_callback(record)
    start = snapshot(trainer)
    trainer.train()
    assert scaler.get_scale() == INIT_SCALE  # one step skipped, every later one taken
    assert all(torch.equal(record.after_first_step[name], value) for name, value in start.items())
    end = snapshot(trainer)
    assert all(value.isfinite().all() for value in end.values())
    for group in ("model.", "trainer."):
        moved = [not torch.equal(end[name], start[name]) for name in start if name.startswith(group)]
        assert not moved or any(moved), group


def test_losses_stay_fp32_inside_autocast(tmp_path):
    """accelerate runs only the model's forward in autocast, but a training loop may compute the loss inside
    `accelerator.autocast()`: the matrix products in the losses (InfoNCE's similarities, LeeBERT's weighted sum of
    terms) must not drop to bf16 there."""
    generator = torch.Generator().manual_seed(0)
    anchor, positive = torch.randn(2, 2, 6, 16, generator=generator)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    logits = list(torch.randn(4, 3, 2, generator=generator))
    labels = torch.tensor([0, 1, 1])
    trainer = LeeBertTrainer(model=toy_model(exit_head="linear"), args=toy_args(LeeBertConfig, tmp_path, clo_mix=1.0))
    with torch.no_grad():  # weights away from the uniform start
        trainer.loss_weight_logits.add_(torch.linspace(-1.0, 1.0, trainer.loss_weight_logits.numel()))
    outputs = SimpleNamespace(all_logits=logits)
    expected = token_info_nce(anchor, positive, mask, 0.1), trainer.objective(outputs, labels)["weighted"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = token_info_nce(anchor, positive, mask, 0.1), trainer.objective(outputs, labels)["weighted"]
    for value, reference in zip(got, expected):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, reference, rtol=1e-6, atol=1e-6)
