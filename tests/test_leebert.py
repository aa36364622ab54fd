"""LeeBERT: learned loss weights, cross-level optimisation, the bi-level gradient against finite differences,
saving and resuming the weights, and a few steps on the real MiniLM-L6 and SST-2 through the command line."""

import json

import pytest
import torch
from torch.func import functional_call
from safetensors import safe_open
from torch.nn.attention import SDPBackend, sdpa_kernel

from hf_multiexit import LeeBertConfig, LeeBertTrainer, MultiExitBertForSequenceClassification
from hf_multiexit.losses import mutual_distillation_terms, task_loss
from hf_multiexit.trainers.base import TRAINER_MODULES_NAME
from hf_multiexit.trainers.leebert_trainer import (
    WEIGHT_NORMALIZATIONS,
    adam_preconditioner,
    initial_loss_weights,
    split_dataset,
)
from test_cli import train_report
from test_trainers import ToyTask, toy_args, toy_model, weights

SINGLE = "single_label_classification"


def batch_of(dataset, indices):
    return {k: torch.stack([dataset[i][k] for i in indices]) for k in ("input_ids", "attention_mask", "labels")}


def test_initial_weights_and_normalizations():
    w = initial_loss_weights(4, 0.5)
    torch.testing.assert_close(w, torch.tensor([0.125] * 4 + [0.5 / 12] * 12))
    for name, norm in WEIGHT_NORMALIZATIONS.items():
        torch.testing.assert_close(norm.weights(norm.logits(w)), w, msg=name)  # starts exactly at w
    a = torch.tensor([0.0, 1.0, -2.0])
    torch.testing.assert_close(WEIGHT_NORMALIZATIONS["sigmoid"].weights(a), torch.sigmoid(a) / torch.sigmoid(a).sum())
    assert initial_loss_weights(1, 0.5).tolist() == [1.0]


def test_split_is_seeded_and_disjoint():
    d1, d2 = split_dataset(ToyTask(50), 0.2, seed=3)
    assert len(d2) == 10 and len(d1) == 40 and not set(d1.indices) & set(d2.indices)
    assert split_dataset(ToyTask(50), 0.2, seed=3)[1].indices == d2.indices
    with pytest.raises(ValueError, match="it has 1 example"):
        split_dataset(ToyTask(1), 0.2, seed=0)


def test_leebert_trains_logs_and_saves_the_learned_weights(tmp_path):
    model = toy_model(exit_head="linear")
    args = toy_args(LeeBertConfig, tmp_path, weight_learning_rate=0.05)
    trainer = LeeBertTrainer(model=model, args=args, train_dataset=ToyTask(40), eval_dataset=ToyTask(16, seed=1))
    assert len(trainer.train_dataset) == 32 and len(trainer.bilevel_dataset) == 8  # bilevel_split 0.2
    start = trainer.loss_weights().detach().clone()
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    names = {f"loss_weight_ce_{i}" for i in range(1, 5)} | {"loss_weight_kd_1_4", "loss_weight_kd_4_1"}
    assert logged and all(names <= set(entry) for entry in logged)
    assert all(entry["clo_single_grad_norm"] > 0 and entry["clo_bilevel_grad_norm"] > 0 for entry in logged)
    learned = trainer.loss_weights().detach()
    # weight_scheme "joint": PABEE's label weights stay, the distillation weights move and keep summing to 1.
    assert not torch.allclose(learned, start)
    torch.testing.assert_close(learned[:4], torch.tensor([1.0, 2.0, 3.0, 4.0]) / 10)
    assert float(learned[4:].sum()) == pytest.approx(1.0, abs=1e-5)
    metrics = trainer.evaluate()
    assert {f"eval_exit_{layer}_accuracy" for layer in range(1, 5)} <= set(metrics)
    model.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["leebert_loss_weights"]
    assert saved["normalization"] == "softmax" and len(saved["weights"]) == 16
    torch.testing.assert_close(torch.tensor(list(saved["weights"].values())), learned.cpu())
    assert json.loads((tmp_path / "saved" / "exit_config.json").read_text())["exit_strategy"] == "patience"


@pytest.mark.parametrize("mix", [0.0, 0.5, 1.0])
def test_weight_gradient_mixes_both_splits(tmp_path, mix):
    """One step by hand: a's gradient is mix * grad_a L_D1 + (1 - mix) * (bi-level gradient on D2), both non-zero;
    mix = 1 needs no D2. An optimizer step then moves the weights."""
    data = ToyTask(16)
    model = toy_model(exit_head="linear").train()
    args = toy_args(LeeBertConfig, tmp_path, clo_mix=mix, per_device_train_batch_size=8, max_steps=1)
    trainer = LeeBertTrainer(model=model, args=args, train_dataset=data)
    assert (trainer.bilevel_dataset is None) == (mix == 1.0)
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    d1, d2 = batch_of(data, range(8)), batch_of(data, range(8, 16))
    trainer._next_bilevel_batch = lambda: d2
    a = trainer.loss_weight_logits
    # By hand: the single-level gradient and the model's gradient on D1, and the bi-level gradient.
    out = model(d1["input_ids"], d1["attention_mask"], output_all_exits=True)
    loss = mutual_distillation_terms(out.all_logits, d1["labels"], SINGLE, 3.0).mean(0) @ trainer.loss_weights()
    params = [p for p in model.parameters() if p.requires_grad]
    *train_gradient, single = torch.autograd.grad(loss, params + [a])
    xi = trainer.lr_scheduler.get_last_lr()[0]
    preconditioner = adam_preconditioner(trainer.optimizer, params, train_gradient)  # unroll_step "adam"
    # Before the first step, Adam's direction is g / (|g| + eps): each non-zero coordinate moves by about xi.
    first = [c * g for c, g in zip(preconditioner, train_gradient)]
    torch.testing.assert_close(first[0], train_gradient[0] / (train_gradient[0].abs() + args.adam_epsilon))
    bilevel = trainer.bilevel_gradient(model, d1, d2, train_gradient, xi, preconditioner)
    assert single.abs().sum() > 0 and bilevel.abs().sum() > 0
    trainer.training_step(model, dict(d1), num_items_in_batch=torch.tensor(8))
    expected = mix * single + (1 - mix) * bilevel if mix < 1 else single
    torch.testing.assert_close(a.grad, expected, atol=1e-7, rtol=1e-4)
    before = a.detach().clone()
    trainer.optimizer.step()
    assert not torch.equal(a.detach(), before)
    trainer.callback_handler.on_optimizer_step(trainer.args, trainer.state, trainer.control)
    assert a.grad is None  # cleared after the step, as Trainer clears the model's


def unrolled_outer_loss(model, weight_model, a, d1, d2, xi, preconditioner):
    """L_D2(theta - xi P grad_theta L_D1(theta, a)): the mean over exits of CE on D2, differentiable in a."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = model(d1["input_ids"], d1["attention_mask"], output_all_exits=True)
    w = functional_call(weight_model, {"logits": a}, ())
    inner = mutual_distillation_terms(out.all_logits, d1["labels"], SINGLE, 3.0).mean(0) @ w
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    unrolled = {n: p - xi * c * g for (n, p), c, g in zip(params.items(), preconditioner, grads)}
    out2 = functional_call(model, unrolled, (d2["input_ids"], d2["attention_mask"]), {"output_all_exits": True})
    return torch.stack([task_loss(z, d2["labels"], SINGLE).mean() for z in out2.all_logits]).mean()


@pytest.mark.parametrize("scheme", ["joint", "all"])
@pytest.mark.parametrize("unroll_step", ["adam", "sgd"])
def test_bilevel_gradient_matches_finite_differences(tmp_path, scheme, unroll_step):
    """The trainer's DARTS estimate against (1) the exact hypergradient by double backpropagation and (2) central
    finite differences of the unrolled D2 loss in every logit of a, for an SGD virtual step and for a preconditioned
    one (a fixed positive diagonal P spread over two orders of magnitude, as Adam's is)."""
    data = ToyTask(16)
    model = toy_model(exit_head="linear", num_hidden_layers=3).eval()  # no dropout: the loss is deterministic
    args = toy_args(LeeBertConfig, tmp_path, weight_scheme=scheme)
    trainer = LeeBertTrainer(model=model, args=args, train_dataset=data)
    with torch.no_grad():  # weights away from the uniform start, so every term matters differently
        trainer.loss_weight_logits.add_(torch.linspace(-1.0, 1.0, trainer.loss_weight_logits.numel()))
    d1, d2 = batch_of(data, range(8)), batch_of(data, range(8, 16))
    a = trainer.loss_weight_logits
    params = [p for p in model.parameters() if p.requires_grad]
    generator = torch.Generator().manual_seed(0)
    if unroll_step == "adam":
        xi, preconditioner = 5e-3, [10 ** (2 * torch.rand(p.shape, generator=generator)) for p in params]
    else:
        xi, preconditioner = 0.5, [torch.ones_like(p) for p in params]
    out = model(d1["input_ids"], d1["attention_mask"], output_all_exits=True)
    inner = mutual_distillation_terms(out.all_logits, d1["labels"], SINGLE, 3.0).mean(0) @ trainer.loss_weights()
    train_gradient = [g.detach() for g in torch.autograd.grad(inner, params)]
    estimate = trainer.bilevel_gradient(
        model, d1, d2, train_gradient, xi, preconditioner if unroll_step == "adam" else None
    )
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernel has no double backward
        exact = torch.autograd.grad(
            unrolled_outer_loss(model, trainer.weight_model, a, d1, d2, xi, preconditioner), a
        )[0]
    h = 1e-2
    numeric = torch.zeros_like(exact)
    with torch.no_grad():
        base = a.detach().clone()
    for k in range(a.numel()):
        values = []
        for sign in (1, -1):
            shifted = base.clone()
            shifted[k] += sign * h
            loss = unrolled_outer_loss(model, trainer.weight_model, shifted, d1, d2, xi, preconditioner)
            values.append(float(loss.detach()))
        numeric[k] = (values[0] - values[1]) / (2 * h)
    assert exact.abs().max() > 1e-4  # a real signal, not noise around zero
    torch.testing.assert_close(estimate, exact, atol=2e-3 * exact.abs().max(), rtol=2e-2)
    torch.testing.assert_close(estimate, numeric, atol=1e-2 * exact.abs().max(), rtol=5e-2)


@pytest.mark.slow
@pytest.mark.parametrize("mix", [0.5, 1.0])
def test_resume_restores_the_learned_weights(tmp_path, mix):
    """Resuming mid-run ends where the uninterrupted run ends: the weights come back from the checkpoint, and with
    CLO the D2 batches continue where they were."""
    data = ToyTask(60)  # D2: 12 examples, two batches per pass, so a restarted D2 stream would differ
    extra = dict(clo_mix=mix, num_train_epochs=1, weight_learning_rate=0.05)
    full = toy_model(exit_head="linear")
    args = toy_args(LeeBertConfig, tmp_path, save_strategy="steps", save_steps=2, **extra)
    uninterrupted = LeeBertTrainer(model=full, args=args, train_dataset=data)
    uninterrupted.train()
    checkpoint = tmp_path / "out" / "checkpoint-2"
    with safe_open(str(checkpoint / TRAINER_MODULES_NAME), "pt") as stored:
        assert stored.metadata()["weight_scheme"] == "joint"
        assert stored.get_tensor("loss_weights.logits").shape == (6,)  # the downward pairs of 4 exits
    resumed_model = toy_model(seed=5, exit_head="linear")
    resumed = LeeBertTrainer(model=resumed_model, args=toy_args(LeeBertConfig, tmp_path, **extra), train_dataset=data)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    torch.testing.assert_close(resumed.loss_weight_logits, uninterrupted.loss_weight_logits)
    for name, value in weights(full).items():
        torch.testing.assert_close(weights(resumed_model)[name], value, msg=name)


def test_leebert_command_on_real_minilm_and_sst2(minilm_path, glue_dir, tmp_path):
    out = tmp_path / "leebert"
    report = train_report(minilm_path, glue_dir, out, "leebert", "--max_train_samples", "64", "--exit_pooling", "mean",
                          "--learning_rate", "1e-4", "--exit_learning_rate", "1e-3", "--weight_learning_rate", "0.05")
    assert report["config"]["clo_mix"] == 0.5
    learned = json.loads((out / "config.json").read_text())["leebert_loss_weights"]["weights"]
    assert len(learned) == 36 and learned["ce_6"] == pytest.approx(6 / 21) and learned["kd_6_1"] == 0
    kd = [w for name, w in learned.items() if name.startswith("kd_")]
    assert sum(kd) == pytest.approx(1.0, abs=1e-5)
    assert learned["kd_1_6"] != pytest.approx(1 / 15, abs=1e-6)  # the weights moved in 3 steps
    model = MultiExitBertForSequenceClassification.from_pretrained(out).eval()
    assert model.exit_config.exit_strategy == "patience"


def test_joint_weight_scheme_keeps_pabee_label_weights_and_learns_downward_distillation():
    """`weight_scheme="joint"`: the label terms have PABEE's weights whatever the logits, distillation pairs whose
    teacher is shallower than the student weigh nothing, the others sum to `distillation_weight`."""
    from hf_multiexit.losses import mutual_distillation_pairs
    from hf_multiexit.trainers.leebert_trainer import WEIGHT_NORMALIZATIONS, LossWeights

    layers = [2, 4, 6]
    weights = LossWeights(layers, "joint", WEIGHT_NORMALIZATIONS["softmax"], 0.5, 0.7)
    with torch.no_grad():
        weights.logits.copy_(torch.tensor([3.0, -1.0, 0.5]))
    w = weights()
    torch.testing.assert_close(w[:3], torch.tensor([2.0, 4.0, 6.0]) / 12)
    kd = dict(zip(mutual_distillation_pairs(3), w[3:].tolist()))
    assert all(value == 0 for (student, teacher), value in kd.items() if teacher < student)
    assert sum(value for (student, teacher), value in kd.items() if teacher > student) == pytest.approx(0.7)
    w.sum().backward()  # only the distillation logits get gradients; the label weights are not parameters
    assert weights.logits.grad is not None and [n for n, _ in weights.named_parameters()] == ["logits"]
    old = LossWeights(layers, "all", WEIGHT_NORMALIZATIONS["softmax"], 0.5, 0.7)()
    torch.testing.assert_close(old, torch.tensor([0.5 / 3] * 3 + [0.5 / 6] * 6))


def test_adam_virtual_step_needs_an_adam_family_optimizer(tmp_path):
    """`unroll_step="auto"` follows the optimizer (SGD: the plain step); `"adam"` with SGD is refused with the fix."""
    args = toy_args(LeeBertConfig, tmp_path, optim="sgd", unroll_step="auto")
    trainer = LeeBertTrainer(model=toy_model(exit_head="linear"), args=args, train_dataset=ToyTask(16))
    trainer.create_optimizer()
    assert trainer._adam_virtual_step is False
    args = toy_args(LeeBertConfig, tmp_path, optim="sgd", unroll_step="adam")
    trainer = LeeBertTrainer(model=toy_model(exit_head="linear"), args=args, train_dataset=ToyTask(16))
    message = r"unroll_step='adam' needs an Adam-family optimizer.*optim='sgd'.*'auto' or 'sgd'"
    with pytest.raises(ValueError, match=message):
        trainer.create_optimizer()
