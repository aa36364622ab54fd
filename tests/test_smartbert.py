"""SmartBERT: InfoNCE and skipping reward by hand, the straight-through hard weight, the `skip` strategy (batching,
skipped layers cost nothing), the two-stage trainer and its resuming, and a quick run on the real MiniLM-L6."""

import json
import math

import pytest
from safetensors.torch import load_file
import torch

from hf_multiexit import SmartBertConfig, SmartBertTrainer
from hf_multiexit.cli import main
from hf_multiexit.losses import skip_reward, token_info_nce
from hf_multiexit.models.multiexit_bert.exit_strategies import entropy
from hf_multiexit.models.multiexit_bert.modeling_multiexit_bert import gate_weight
from hf_multiexit.trainers import StageCallback
from hf_multiexit.trainers.base import TRAINER_MODULES_NAME
from test_modeling import NUM_LAYERS, between_values, one_by_one, padded_batch, spread_threshold, tiny_model
from test_trainers import ToyTask, toy_args, toy_model, weights


# ----------------------------------------------------------------------------------------------- losses
def test_token_info_nce_matches_hand_computation():
    a = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    b = torch.tensor([[[3.0, 4.0], [0.0, -1.0]]])
    tau = 0.5
    # cos(a_t, b_s): a_1 = e1, a_2 = e2; b_1 = (0.6, 0.8), b_2 = -e2.
    cos = [[0.6, 0.0], [0.8, -1.0]]
    expected = []
    for t in range(2):
        denominator = sum(math.exp(cos[t][s] / tau) for s in range(2))
        expected.append(-math.log(math.exp(cos[t][t] / tau) / denominator))
    got = token_info_nce(a, b, torch.ones(1, 2), tau)
    torch.testing.assert_close(got, torch.tensor([sum(expected) / 2]))


def test_token_info_nce_ignores_padding():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, 4, generator=gen), torch.randn(2, 5, 4, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    reference = token_info_nce(a[:1, :3], b[:1, :3], mask[:1, :3], 0.5)
    noisy_a, noisy_b = a.clone().requires_grad_(), b.clone()
    with torch.no_grad():
        noisy_b[0, 3:] = 100 * torch.randn(2, 4, generator=gen)  # padding may hold anything
    got = token_info_nce(noisy_a, noisy_b, mask, 0.5)
    torch.testing.assert_close(got[0], reference[0])
    got.sum().backward()
    assert torch.isfinite(noisy_a.grad).all() and noisy_a.grad[0, 3:].abs().max() == 0
    with pytest.raises(ValueError, match="temperature=0 must be > 0"):
        token_info_nce(a, b, mask, 0)


def test_skip_reward_is_lambda_over_summed_mean_gates():
    gates = [torch.tensor([0.5, 0.25]), torch.tensor([0.1, 0.3])]
    torch.testing.assert_close(skip_reward(gates, 0.04), torch.full((2,), 0.04 / (0.375 + 0.2)))
    # Scaled by (n / n_ref)^2: 2 gates against a 12-layer reference.
    torch.testing.assert_close(skip_reward(gates, 0.04, 12), torch.full((2,), 0.04 * (2 / 12) ** 2 / (0.375 + 0.2)))


def test_scaled_skip_reward_pulls_each_gate_alike_at_any_depth():
    """With the reference depth, the gradient on one gate at equal gate values is the same for 6 and 12 layers (and
    is the released one at 12); unscaled it is 4x larger on 6 layers."""
    pulls = {}
    for n in (6, 12):
        for reference in (None, 12):
            gates = [torch.full((3,), 0.5, requires_grad=True) for _ in range(n)]
            skip_reward(gates, 0.04, reference).mean().backward()
            pulls[n, reference] = gates[0].grad.sum().item()
    assert pulls[6, None] == pytest.approx(4 * pulls[12, None])
    assert pulls[6, 12] == pytest.approx(pulls[12, 12]) and pulls[12, 12] == pytest.approx(pulls[12, None])


# ----------------------------------------------------------------------------------------------- gates
def biased_gate_model(ids, mask, seed=0):
    """A tiny gated model whose gates split the batch: some samples skip some layers, others run them."""
    model = tiny_model(seed, use_skip_gates=True)
    with torch.no_grad():
        for gate in model.bert.skip_gates:
            gate.score.bias -= torch.logit(torch.tensor(between_values(gate(model.bert.embeddings(ids), mask))))
    return model


def test_hard_weight_is_straight_through():
    """Forward: the hard weight is exactly 1[g >= r]; backward: its gradient reaches g as if it were g
    (d weight / d bias = g (1 - g) through the sigmoid)."""
    ids, mask, _ = padded_batch(16)
    model = biased_gate_model(ids, mask).train()
    hidden = model.bert.embeddings(ids).detach()
    coefficients = torch.randn(16)
    for mode in ("hard", "soft"):
        model.zero_grad()
        gate = model.bert.gate(0, hidden, mask)
        weight = gate_weight(gate, mode, 0.5)
        expected_weight = (gate >= 0.5).float() if mode == "hard" else gate
        assert torch.equal(weight.detach(), expected_weight.detach())
        (weight * coefficients).sum().backward()
        g = gate.detach()
        torch.testing.assert_close(model.bert.skip_gates[0].score.bias.grad, (coefficients * g * (1 - g)).sum().view(1))
    # In the model: a hard-skipped sample carries its layer input through unchanged, the others the layer output.
    out = model(ids, mask, output_all_exits=True, output_hidden_states=True, gate_mode="hard")
    for i, g in enumerate(out.gate_probs):
        skipped = g >= 0.5
        assert torch.equal(out.hidden_states[i + 1][skipped], out.hidden_states[i][skipped])
        assert torch.equal(out.hidden_states[i + 1][~skipped], out.layer_outputs[i][~skipped])
    assert any((g >= 0.5).any() and (g < 0.5).any() for g in out.gate_probs)


@pytest.mark.parametrize("batch_size", [5, 32])
def test_skip_strategy_batched_equals_one_by_one(batch_size):
    ids, mask, lengths = padded_batch(32)
    model = biased_gate_model(ids, mask)
    with torch.no_grad():
        kw = dict(exit_strategy="skip", entropy_threshold=spread_threshold(model, ids, mask))
        chunks = [model(ids[i : i + batch_size], mask[i : i + batch_size], **kw) for i in range(0, 32, batch_size)]
        layers, logits = one_by_one(model, ids, lengths, **kw)
    exit_layers = torch.cat([c.exit_layers for c in chunks])
    assert torch.equal(exit_layers, layers)
    torch.testing.assert_close(torch.cat([c.logits for c in chunks]), logits, atol=1e-4, rtol=0)
    # The case exercises early exits and skipped layers both.
    layers_run = torch.cat([c.layers_run for c in chunks])
    assert (exit_layers < NUM_LAYERS).any() and (layers_run < exit_layers).any()


def test_skipped_layers_cost_no_layer_and_no_exit_check():
    ids, mask, _ = padded_batch(32)
    model = biased_gate_model(ids, mask)
    with torch.no_grad():
        # With S = 0 nobody leaves early, so the eval all-exits pass sees the same gates as the early-exit loop.
        gates = model(ids, mask, output_all_exits=True).gate_probs
        ran = torch.stack([g < 0.5 for g in gates], dim=1)
        out = model(ids, mask, exit_strategy="skip", entropy_threshold=0.0)
        assert torch.equal(out.layers_run, ran.sum(1))
        assert torch.equal(out.exit_checks, ran[:, :-1].sum(1) + 1)  # intermediate exits of layers run, and the final
        # A gate forced to 1: neither the layer nor its exit head ever runs, for any sample.
        model.bert.skip_gates[1].score.bias.fill_(1e4)
        calls = []
        hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in (model.bert.encoder.layer[1], model.bert.exits[1])]
        forced = model(ids, mask, exit_strategy="skip", entropy_threshold=0.0)
        for hook in hooks:
            hook.remove()
    assert calls == []
    assert (forced.layers_run <= NUM_LAYERS - 1).all() and (forced.exit_checks <= NUM_LAYERS - 1).all()


# ----------------------------------------------------------------------------------------------- trainer
def smart_model(seed=0):
    return toy_model(seed, use_skip_gates=True, exit_head="attention")


def smart_args(tmp_path, **overrides):
    values = dict(num_train_epochs=2, stage2_num_train_epochs=1, soft_gate_fraction=0.5, stage1_contrastive_weight=0.1)
    return toy_args(SmartBertConfig, tmp_path, **{**values, **overrides})


@pytest.mark.parametrize(
    "epochs, fraction, hard, soft",
    [(5, 0.6, 1.0, 3.0), (2, 0.6, 1.0, 1.0), (2, 0.6, 0.0, 1.2), (1, 0.6, 1.0, 0.6), (3, 0.0, 1.0, 0.0)],
)
def test_soft_phase_leaves_min_hard_gate_epochs(tmp_path, epochs, fraction, hard, soft):
    """The released 3 soft of 5 epochs; on 2 epochs the soft phase gives way to one hard epoch (0.8 without the
    minimum); a run no longer than the minimum keeps the fraction."""
    args = smart_args(tmp_path, soft_gate_fraction=fraction, min_hard_gate_epochs=hard)
    trainer = SmartBertTrainer(model=smart_model(), args=args)
    trainer.state.num_train_epochs = epochs
    assert trainer.soft_gate_epochs() == pytest.approx(soft)


def test_smartbert_two_stages_train_what_they_should(tmp_path):
    model = smart_model()
    trainer = SmartBertTrainer(model=model, args=smart_args(tmp_path), train_dataset=ToyTask(32), eval_dataset=ToyTask(16, seed=1))
    snapshots, modes = {}, []
    original_begin, original_kwargs = trainer.begin_stage, trainer.forward_kwargs
    trainer.begin_stage = lambda index: (snapshots.update({index: (weights(model), {k: v.clone() for k, v in trainer.projections.state_dict().items()})}), original_begin(index))
    trainer.forward_kwargs = lambda: (modes.append((trainer.stage, trainer.gate_mode())), original_kwargs())[1]
    result = trainer.train()
    assert result.metrics["train_runtime"] == result.metrics["stage_1_train_runtime"] + result.metrics["stage_2_train_runtime"]
    # Stage 1: 2 epochs of 4 steps, soft then hard; stage 2: hard.
    train_modes = [m for m in modes if m[0] == "backbone"]
    assert train_modes[:4] == [("backbone", "soft")] * 4 and train_modes[4:8] == [("backbone", "hard")] * 4
    assert {m for m in modes if m[0] == "exits"} == {("exits", "hard")}
    after, after_projections = weights(model), trainer.projections.state_dict()
    (start, start_proj), (middle, middle_proj) = snapshots[0], snapshots[1]
    intermediate = {n for n in after if n.startswith("bert.exits.") and not n.startswith(f"bert.exits.{NUM_LAYERS - 1}.")}
    for name in after:
        stage1_trains = name not in intermediate
        assert torch.equal(middle[name], start[name]) != stage1_trains, name
        assert torch.equal(after[name], middle[name]) != (not stage1_trains), name  # bit-identical when frozen
    for name in after_projections:
        assert torch.equal(middle_proj[name], start_proj[name]) != name.startswith("layers."), name
        assert torch.equal(after_projections[name], middle_proj[name]) != name.startswith("exits."), name
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert all(f"exit_{layer}_loss" in e for e in logged for layer in range(1, NUM_LAYERS + 1))
    metrics = trainer.evaluate()
    assert {f"eval_exit_{layer}_accuracy" for layer in range(1, NUM_LAYERS + 1)} <= set(metrics)
    assert model.exit_config.exit_strategy == "skip" and model.exit_config.gate_threshold == model.config.gate_threshold
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("gate_learning_rate", [2e-5, None])
def test_skip_gates_learn_at_their_own_rate(tmp_path, gate_learning_rate):
    model = smart_model()
    args = smart_args(tmp_path, learning_rate=1e-3, gate_learning_rate=gate_learning_rate)
    trainer = SmartBertTrainer(model=model, args=args, train_dataset=ToyTask(8))
    optimizer = trainer.create_optimizer()
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert {rates[id(p)] for p in model.base_model.skip_gates.parameters()} == {gate_learning_rate or 1e-3}
    assert rates[id(model.base_model.embeddings.word_embeddings.weight)] == 1e-3


def test_smartbert_objective_terms_by_hand(tmp_path):
    model = smart_model().train()
    args = smart_args(tmp_path, skip_lambda=0.5, stage1_contrastive_weight=0.2, stage2_contrastive_weight=0.3)
    trainer = SmartBertTrainer(model=model, args=args, train_dataset=ToyTask(8))
    data = ToyTask(8)
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in ("input_ids", "attention_mask", "labels")}
    labels, mask = batch["labels"], batch["attention_mask"]
    out = trainer.model_outputs(model, batch)
    terms = trainer.objective(out, labels)
    ce = torch.nn.functional.cross_entropy(out.all_logits[-1], labels, reduction="none")
    torch.testing.assert_close(terms["final"], 0.8 * ce)
    scale = (NUM_LAYERS / 12) ** 2  # skip_reward_reference_layers=12
    torch.testing.assert_close(terms["skip"], 0.8 * 0.5 * scale / sum(g.mean() for g in out.gate_probs).expand(8))
    views = [p(h) for p, h in zip(trainer.projections["layers"], out.hidden_states[1:])]
    nce = sum(token_info_nce(views[i], views[i + 1], mask, 0.5) for i in range(NUM_LAYERS - 1))
    torch.testing.assert_close(terms["contrastive"], 0.2 * nce)
    trainer.stage_index = 1
    out = trainer.model_outputs(model, batch)
    terms = trainer.objective(out, labels)
    exits = sum(torch.nn.functional.cross_entropy(z, labels, reduction="none") for z in out.all_logits[:-1])
    torch.testing.assert_close(terms["exits"], 0.7 * exits)
    heads = model.bert.exits
    feats = [trainer.projections["exits"][e](torch.tanh(heads[e].features.proj(out.layer_outputs[e]))) for e in range(NUM_LAYERS - 1)]
    nce = sum(token_info_nce(feats[e], feats[e + 1], mask, 0.55) for e in range(NUM_LAYERS - 2)) / (NUM_LAYERS - 2)
    torch.testing.assert_close(terms["contrastive"], 0.3 * nce)
    # Intermediate exits read their layer's own output, the final classifier the gated state.
    torch.testing.assert_close(out.all_logits[0], heads[0](out.layer_outputs[0], mask, None))
    torch.testing.assert_close(out.all_logits[-1], heads[-1](out.hidden_states[-1], mask, None))


@pytest.mark.slow
def test_smartbert_resumes_in_either_stage(tmp_path):
    data = ToyTask(16)
    args = smart_args(tmp_path, num_train_epochs=1, save_strategy="steps", save_steps=1)
    full = smart_model()
    full_trainer = SmartBertTrainer(model=full, args=args, train_dataset=data)
    full_trainer.train()
    for stage, stages_expected in (("stage-1", [0, 1]), ("stage-2", [1])):
        path = tmp_path / "out" / stage / "checkpoint-1"
        assert (path / TRAINER_MODULES_NAME).is_file()
        assert StageCallback.stage_of_checkpoint(str(path)) == stages_expected[0]
        resumed = smart_model(seed=7)  # different initial weights: everything must come from the checkpoint
        trainer = SmartBertTrainer(model=resumed, args=smart_args(tmp_path, num_train_epochs=1), train_dataset=data)
        stages_run = []
        original_begin = trainer.begin_stage
        trainer.begin_stage = lambda index: (stages_run.append(index), original_begin(index))
        trainer.train(resume_from_checkpoint=str(path))
        assert stages_run == stages_expected
        for name, value in weights(full).items():
            torch.testing.assert_close(weights(resumed)[name], value, msg=name)
        for name, value in full_trainer.projections.state_dict().items():
            torch.testing.assert_close(trainer.projections.state_dict()[name], value, msg=name)


def test_smartbert_gradient_accumulation_matches_one_doubled_batch(tmp_path):
    """Every term but the batch-level skip reward is per sample (so lambda = 0 here): accumulating two halves equals
    one batch, in both stages, the trainer-owned projections included (plain SGD at lr 1, as in test_trainers)."""
    data = ToyTask(16)
    results = []
    for batch, accumulation in ((16, 1), (8, 2)):
        model = smart_model()
        args = smart_args(
            tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation, max_steps=1,
            learning_rate=1.0, max_grad_norm=1e9, optim="sgd", skip_lambda=0.0,
        )
        trainer = SmartBertTrainer(model=model, args=args, train_dataset=data)
        trainer.train()
        results.append({**weights(model), **{f"projections.{k}": v.clone() for k, v in trainer.projections.state_dict().items()}})
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], atol=2e-6, rtol=1e-5, msg=name)


def test_smartbert_needs_gates_and_attention_heads(tmp_path):
    with pytest.raises(ValueError, match="needs a model with skip gates"):
        SmartBertTrainer(model=toy_model(exit_head="attention"), args=smart_args(tmp_path))
    with pytest.raises(ValueError, match="needs attention exit heads.*exit_head='pooler'"):
        SmartBertTrainer(model=toy_model(use_skip_gates=True), args=smart_args(tmp_path))


# ----------------------------------------------------------------------------------------------- real model
def test_train_command_smartbert_on_minilm_sst2(minilm_path, glue_dir, tmp_path):
    """`hf-multiexit train --method smartbert` on the real MiniLM-L6 and SST-2 sentences; the saved model's
    skip rule gives the same exits at batch 32 and one by one."""
    out = tmp_path / "smart"
    argv = [
        "train", "--method", "smartbert", "--model_name_or_path", minilm_path, "--task", "sst2", "--data_dir", str(glue_dir),
        "--output_dir", str(out), "--max_train_samples", "32", "--max_eval_samples", "32", "--max_length", "32",
        "--num_train_epochs", "1", "--stage2_num_train_epochs", "1", "--soft_gate_fraction", "0", "--report_to", "none",
        # Rates high enough that two steps per stage give exits whose entropies differ by more than rounding
        # (at 1e-4 / 3e-3 they stayed within ~1e-5 of ln 2, too close to place a threshold between them).
        "--save_strategy", "no", "--disable_tqdm", "true", "--use_cpu", "true", "--learning_rate", "1e-3", "--exit_learning_rate", "3e-2",
    ]
    assert main(argv) == 0
    report = json.loads((out / "eval_results.json").read_text())
    assert [e["layer"] for e in report["per_exit"]] == [1, 2, 3, 4, 5, 6] and report["method"] == "smartbert"
    assert json.loads((out / "exit_config.json").read_text())["exit_strategy"] == "skip"
    from transformers import AutoTokenizer

    from hf_multiexit import MultiExitBertForSequenceClassification

    model = MultiExitBertForSequenceClassification.from_pretrained(out).eval()
    assert model.config.use_skip_gates and model.bert.skip_gates is not None
    lines = (glue_dir / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:33]
    batch = AutoTokenizer.from_pretrained(out)([line.split("\t")[0] for line in lines], padding=True, return_tensors="pt")
    lengths = batch["attention_mask"].sum(1)
    with torch.no_grad():
        # Thresholds inside the observed spread, so that skipping and early exit both happen on real inputs: r between
        # the gates' values, then S between the exits' entropies on the path those hard gates take.
        model.config.gate_threshold = between_values(torch.stack(model(**batch, output_all_exits=True).gate_probs))
        out_all = model(**batch, output_all_exits=True)
        checked = [entropy(z)[g < model.config.gate_threshold] for z, g in zip(out_all.all_logits[2:-1], out_all.gate_probs[2:-1])]
        entropies = torch.cat(checked)
        kw = dict(exit_strategy="skip", gate_threshold=model.config.gate_threshold, entropy_threshold=between_values(entropies), min_exit_layer=3)
        out32 = model(**batch, **kw)
        layers, logits = one_by_one(model, batch["input_ids"], lengths, **kw)
    assert torch.equal(out32.exit_layers, layers)
    torch.testing.assert_close(out32.logits, logits, atol=1e-4, rtol=0)
    assert (out32.layers_run < out32.exit_layers).any() and (out32.exit_layers < 6).any()


def test_selection_split_keeps_each_stages_best_epoch_on_training_data_only(tmp_path):
    """`selection_split`: each stage ends with the weights of its best epoch on the held-out training split (final
    exit in stage 1, intermediate exits in stage 2), the dev set is never evaluated while training, and it is the
    evaluation set again afterwards."""
    data, dev = ToyTask(40), ToyTask(16, seed=9)
    args = smart_args(tmp_path, num_train_epochs=3, stage2_num_train_epochs=3, selection_split=0.25,
                      learning_rate=0.5)  # a large rate, so the epochs differ and the best is rarely the last
    model = smart_model()
    trainer = SmartBertTrainer(model=model, args=args, train_dataset=data, eval_dataset=dev)
    assert len(trainer.train_dataset) == 30 and len(trainer.selection_dataset) == 10
    assert not set(trainer.train_dataset.indices) & set(trainer.selection_dataset.indices)
    trainer.train()
    logged = [key for entry in trainer.state.log_history for key in entry if key.startswith("eval_")]
    assert logged and all(key.startswith("eval_selection_") for key in logged)  # never the dev set
    assert trainer.eval_dataset is dev and "eval_exit_1_accuracy" in trainer.evaluate()
    not_last = []
    for stage in ("stage-1", "stage-2"):
        checkpoints = sorted((tmp_path / "out" / stage).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
        scores = {e["step"]: e["eval_selection_score"] for e in state["log_history"] if "eval_selection_score" in e}
        best = max(scores, key=scores.get)
        assert state["best_model_checkpoint"].endswith(f"checkpoint-{best}")
        assert len(scores) == 3
        not_last.append(best != max(scores))
    assert any(not_last)  # a restore really happened
    # The trained model holds stage 2's best epoch, which started from stage 1's best.
    best_stage2 = load_file(str(tmp_path / "out" / "stage-2" / state["best_model_checkpoint"].split("/")[-1] / "model.safetensors"))
    for name, value in best_stage2.items():
        torch.testing.assert_close(model.state_dict()[name], value, msg=name)


def test_selection_split_out_of_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"selection_split=1.0 is out of range"):
        smart_args(tmp_path, selection_split=1.0)
