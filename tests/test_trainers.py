"""The trainers on a tiny model: objectives, per-exit logging and metrics, stages, accumulation, GP and GE."""

import json

import pytest
import torch
from torch.utils.data import Dataset

from hf_multiexit import (
    CurriculumConfig,
    DeeBertConfig,
    DeeBertTrainer,
    LeeBertConfig,
    MultiExitBertForSequenceClassification,
    PabeeConfig,
    PabeeTrainer,
    RomeBertConfig,
    RomeBertTrainer,
    SmartBertConfig,
)
from hf_multiexit.losses import distillation_loss, project_conflicting, task_loss
from hf_multiexit.trainers import StageCallback
from test_modeling import tiny_config

SEQ = 8


class ToyTask(Dataset):
    """Label 1 when token 7 occurs in the sentence: learnable by a tiny BERT in a few steps."""

    def __init__(self, size, seed=0):
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(10, 99, (size, SEQ), generator=gen)
        self.labels = torch.randint(0, 2, (size,), generator=gen)
        self.ids[self.labels == 1, torch.randint(1, SEQ, (1,), generator=gen)] = 7

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(SEQ, dtype=torch.long), "labels": self.labels[i]}


def toy_model(seed=0, **overrides):
    torch.manual_seed(seed)
    overrides = {"num_labels": 2, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **overrides}
    return MultiExitBertForSequenceClassification(tiny_config(**overrides))


def toy_args(config_class, tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=1e-3,
        num_train_epochs=2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        task="sst2",
    )
    values.update(overrides)
    return config_class(**values)


@pytest.mark.parametrize(
    "config_class, trainer_class, extra",
    [
        (PabeeConfig, PabeeTrainer, {}),
        (RomeBertConfig, RomeBertTrainer, {"gradient_regularization": "gp"}),
        (RomeBertConfig, RomeBertTrainer, {"gradient_regularization": "ge"}),
        (RomeBertConfig, RomeBertTrainer, {"gradient_regularization": "none", "exit_learning_rate": 3e-3}),
        (DeeBertConfig, DeeBertTrainer, {}),
    ],
)
def test_trainer_logs_per_exit_losses_and_metrics(tmp_path, config_class, trainer_class, extra):
    model = toy_model()
    trainer = trainer_class(
        model=model, args=toy_args(config_class, tmp_path, **extra), train_dataset=ToyTask(32), eval_dataset=ToyTask(16, seed=1)
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(f"exit_{layer}_loss" in entry for entry in logged for layer in range(1, 5))
    metrics = trainer.evaluate()
    assert {f"eval_exit_{layer}_accuracy" for layer in range(1, 5)} | {"eval_accuracy", "eval_loss"} <= set(metrics)
    assert metrics["eval_accuracy"] == metrics["eval_exit_4_accuracy"]
    assert model.exit_config.exit_strategy == ("patience" if trainer_class is PabeeTrainer else "entropy")
    assert all(p.requires_grad for p in model.parameters())  # stages restore what they froze


def weights(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize(
    "config_class, trainer_class, extra",
    [
        (PabeeConfig, PabeeTrainer, {}),
        (RomeBertConfig, RomeBertTrainer, {"gradient_regularization": "gp"}),
        (RomeBertConfig, RomeBertTrainer, {"gradient_regularization": "ge"}),
    ],
)
def test_gradient_accumulation_matches_one_doubled_batch(tmp_path, config_class, trainer_class, extra):
    """Plain SGD (lr 1) so the weight change is the gradient itself: Adam's first step, g / |g|, would turn
    float-rounding noise in near-zero gradients into full-size differences."""
    data = ToyTask(16)
    results = []
    for batch, accumulation in ((16, 1), (8, 2)):
        model = toy_model()
        args = toy_args(
            config_class, tmp_path, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
            max_steps=1, learning_rate=1.0, max_grad_norm=1e9, optim="sgd", **extra,
        )
        trainer_class(model=model, args=args, train_dataset=data).train()
        results.append(weights(model))
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], atol=2e-6, rtol=1e-5, msg=name)


def test_deebert_stage_two_trains_only_the_intermediate_exits(tmp_path):
    model = toy_model(exit_head="linear")
    args = toy_args(DeeBertConfig, tmp_path, num_train_epochs=1, stage2_num_train_epochs=2, weight_decay=0.1)
    trainer = DeeBertTrainer(model=model, args=args, train_dataset=ToyTask(32))
    snapshots = {}
    original_begin = trainer.begin_stage

    def begin_stage(index):
        snapshots[index] = weights(model)
        original_begin(index)

    trainer.begin_stage = begin_stage
    result = trainer.train()
    assert result.metrics["train_runtime"] == result.metrics["stage_1_train_runtime"] + result.metrics["stage_2_train_runtime"]
    after = weights(model)
    before_stage2 = snapshots[1]
    intermediate = {n for n, _ in model.named_parameters() if n.startswith("bert.exits.") and not n.startswith("bert.exits.3.")}
    assert intermediate
    for name in after:
        if name in intermediate:
            assert not torch.equal(after[name], before_stage2[name]), name
        else:
            assert torch.equal(after[name], before_stage2[name]), name  # bit-identical, weight decay included
    # Stage 1 trained the backbone and the final classifier but not the intermediate exits.
    assert not torch.equal(before_stage2["bert.encoder.layer.0.attention.self.query.weight"], snapshots[0]["bert.encoder.layer.0.attention.self.query.weight"])
    assert all(torch.equal(before_stage2[n], snapshots[0][n]) for n in intermediate)
    assert [e["stage"] for e in trainer.state.log_history if "loss" in e][-1] == 2


@pytest.mark.slow
def test_deebert_resumes_in_the_stage_of_the_checkpoint(tmp_path):
    data = ToyTask(32)
    args = toy_args(DeeBertConfig, tmp_path, num_train_epochs=1, save_strategy="steps", save_steps=2)
    full = toy_model()
    DeeBertTrainer(model=full, args=args, train_dataset=data).train()
    stage2 = tmp_path / "out" / "stage-2"
    checkpoint = stage2 / "checkpoint-2"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["StageCallback"]["args"]["stage_index"] == 1
    resumed = toy_model(seed=5)  # different initial weights: everything must come from the checkpoint
    trainer = DeeBertTrainer(model=resumed, args=toy_args(DeeBertConfig, tmp_path, num_train_epochs=1), train_dataset=data)
    stages_run = []
    original_begin = trainer.begin_stage
    trainer.begin_stage = lambda index: (stages_run.append(index), original_begin(index))
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert stages_run == [1]
    for name, value in weights(full).items():
        torch.testing.assert_close(weights(resumed)[name], value, msg=name)
    # A stage-1 checkpoint resumes stage 1, then runs stage 2, and ends where the uninterrupted run ended.
    stage1 = tmp_path / "out" / "stage-1" / "checkpoint-2"
    assert StageCallback.stage_of_checkpoint(str(stage1)) == 0
    early = toy_model(seed=6)
    trainer = DeeBertTrainer(model=early, args=toy_args(DeeBertConfig, tmp_path, num_train_epochs=1), train_dataset=data)
    stages_run = []
    original_begin = trainer.begin_stage
    trainer.begin_stage = lambda index: (stages_run.append(index), original_begin(index))
    trainer.train(resume_from_checkpoint=str(stage1))
    assert stages_run == [0, 1]
    for name, value in weights(full).items():
        torch.testing.assert_close(weights(early)[name], value, msg=name)
    # resume_from_checkpoint=True finds the latest checkpoint of the latest stage.
    assert DeeBertTrainer(model=toy_model(), args=args, train_dataset=data)._resume_point(str(tmp_path / "out"), True) == (1, str(stage2 / "checkpoint-4"))
    with pytest.raises(ValueError, match="does not record a stage"):
        DeeBertTrainer(model=toy_model(), args=args, train_dataset=data)._resume_point(str(tmp_path), str(tmp_path))


def test_romebert_gradient_projection_matches_hand_computation(tmp_path):
    model = toy_model()
    data = ToyTask(8)
    args = toy_args(RomeBertConfig, tmp_path, per_device_train_batch_size=8, gradient_regularization="gp")
    trainer = RomeBertTrainer(model=model, args=args, train_dataset=data)
    batch = {k: torch.stack([data[i][k] for i in range(8)]) for k in ("input_ids", "attention_mask", "labels")}
    # By hand: the two groups' gradients on the weight matrices of layers 1..L-1, projected if they conflict.
    model.train()
    out = model(batch["input_ids"], batch["attention_mask"], output_all_exits=True)
    labels = batch["labels"]
    final = task_loss(out.all_logits[-1], labels, "single_label_classification").mean()
    exits = sum(
        0.1 * task_loss(z, labels, "single_label_classification") + 0.9 * distillation_loss(z, out.all_logits[-1], 3.0, "single_label_classification")
        for z in out.all_logits[:-1]
    ).mean()
    params = [p for p in model.bert.encoder.layer[:-1].parameters() if p.dim() == 2]
    g_a = torch.cat([g.flatten() for g in torch.autograd.grad(exits, params, retain_graph=True)])
    g_b = torch.cat([g.flatten() for g in torch.autograd.grad(final, params, retain_graph=True)])
    expected = g_a + project_conflicting(g_b, g_a)
    other = model.bert.exits[0].classifier.weight
    expected_other = torch.autograd.grad(exits + final, other)[0]
    model.zero_grad()
    trainer.training_step(model, dict(batch), num_items_in_batch=torch.tensor(8))
    got = torch.cat([p.grad.flatten() for p in params])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(other.grad, expected_other)  # parameters outside the projection: plain sum
    assert torch.dot(g_b, g_a) < 0 or torch.equal(expected, g_a + g_b)


def test_gradient_equilibrium_scales_each_exits_gradient():
    """With 4 exits, exit i's loss reaches layer 1 through GR(., 1/k_i) at exit i and GR(., (k_j - 1)/k_j) at the
    earlier exits j (k = exits left): exit 2 gets (1/3) * (3/4) = 1/4 of its plain gradient."""
    model = toy_model().train()
    data = ToyTask(4)
    ids = torch.stack([data[i]["input_ids"] for i in range(4)])
    param = model.bert.encoder.layer[0].output.dense.weight
    factors = {1: 1 / 4, 2: (1 / 3) * (3 / 4), 3: (1 / 2) * (2 / 3) * (3 / 4), 4: (1 / 2) * (2 / 3) * (3 / 4)}
    for exit_index, factor in factors.items():
        plain = torch.autograd.grad(model(ids, output_all_exits=True).all_logits[exit_index - 1].sum(), param)[0]
        scaled = torch.autograd.grad(
            model(ids, output_all_exits=True, gradient_equilibrium=True).all_logits[exit_index - 1].sum(), param
        )[0]
        torch.testing.assert_close(scaled, plain * factor, atol=1e-7, rtol=1e-4)
    # Forward values are unchanged.
    with torch.no_grad():
        a = model(ids, output_all_exits=True).all_logits
        b = model(ids, output_all_exits=True, gradient_equilibrium=True).all_logits
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "config_class, kwargs, message",
    [
        (RomeBertConfig, {"gamma": 1.5}, r"gamma=1.5 is out of range"),
        (RomeBertConfig, {"gradient_regularization": "pcgrad"}, r"'pcgrad' is not one of \['gp', 'ge', 'none'\]"),
        (RomeBertConfig, {"kd_reduction": "sum"}, r"kd_reduction='sum' is not one of"),
        (RomeBertConfig, {"temperature": 0}, r"temperature=0 must be > 0"),
        (PabeeConfig, {"exit_loss_weights": [-1.0, 1.0]}, r"exit_loss_weights=\[-1.0, 1.0\] must be non-negative"),
        (PabeeConfig, {"patience": -1}, r"patience=-1"),
        (DeeBertConfig, {"stage2_num_train_epochs": 0}, r"stage2_num_train_epochs=0 must be a positive"),
        (PabeeConfig, {"exit_learning_rate": -1.0}, r"exit_learning_rate=-1.0 must be a positive"),
        (LeeBertConfig, {"clo_mix": 1.5}, r"clo_mix=1.5 is out of range"),
        (LeeBertConfig, {"bilevel_split": 1.0}, r"bilevel_split=1.0 is out of range"),
        (LeeBertConfig, {"weight_normalization": "relu"}, r"weight_normalization='relu' is not one of \['softmax', 'sigmoid'\]"),
        (LeeBertConfig, {"distillation_share": 1.0}, r"distillation_share=1.0 is out of range"),
        (LeeBertConfig, {"unroll_learning_rate": 0.0}, r"unroll_learning_rate=0.0 must be a positive"),
        (LeeBertConfig, {"finite_difference_eps": -1.0}, r"finite_difference_eps=-1.0 must be > 0"),
        (LeeBertConfig, {"temperature": 0}, r"temperature=0 must be > 0"),
        (LeeBertConfig, {"weight_scheme": "label"}, r"weight_scheme='label' is not one of \['joint', 'all'\]"),
        (LeeBertConfig, {"unroll_step": "adamw"}, r"unroll_step='adamw' is not one of \['auto', 'adam', 'sgd'\]"),
        (LeeBertConfig, {"distillation_weight": -0.5}, r"distillation_weight=-0.5 must be >= 0"),
        (CurriculumConfig, {"difficulty_scorer": "bleu"}, r"difficulty_scorer='bleu' is not one of \['depth_weighted_loss', 'loss', "
         r"'first_correct_exit', 'length'\]"),
        (CurriculumConfig, {"pacing": "step"}, r"pacing='step' is not one of \['sqrt', 'linear', 'baby_steps'\]"),
        (CurriculumConfig, {"distillation": "deep"}, r"distillation='deep' is not one of \['layerwise', 'last_layer'\]"),
        (CurriculumConfig, {"initial_competence": 0.0}, r"initial_competence=0.0 is out of range"),
        (CurriculumConfig, {"curriculum_fraction": 1.5}, r"curriculum_fraction=1.5 is out of range"),
        (CurriculumConfig, {"baby_steps_buckets": 0}, r"baby_steps_buckets=0 must be an integer >= 1"),
        (CurriculumConfig, {"difficulty_warmup_epochs": 0}, r"difficulty_warmup_epochs=0 must be > 0"),
        (CurriculumConfig, {"gamma": -0.1}, r"gamma=-0.1 is out of range"),
        (CurriculumConfig, {"curriculum_sampling": "random"}, r"curriculum_sampling='random' is not one of \['pass', 'independent'\]"),
        (SmartBertConfig, {"stage1_contrastive_weight": 1.0}, r"stage1_contrastive_weight=1.0 is out of range: it must lie in \[0, 1\)"),
        (SmartBertConfig, {"stage2_temperature": 0.0}, r"stage2_temperature=0.0 must be > 0"),
        (SmartBertConfig, {"soft_gate_fraction": 1.5}, r"soft_gate_fraction=1.5 is out of range: it must lie in \[0, 1\]"),
        (SmartBertConfig, {"min_hard_gate_epochs": -1.0}, r"min_hard_gate_epochs=-1.0 must be >= 0"),
        (SmartBertConfig, {"skip_lambda": -0.1}, r"skip_lambda=-0.1 must be >= 0"),
        (SmartBertConfig, {"skip_reward_reference_layers": 0}, r"skip_reward_reference_layers=0 must be >= 1 or None"),
        (SmartBertConfig, {"gate_learning_rate": 0.0}, r"gate_learning_rate=0.0 must be a positive number or None"),
        (SmartBertConfig, {"projection_size": 0}, r"projection_size=0 must be a positive integer"),
        (SmartBertConfig, {"stage2_num_train_epochs": 0}, r"stage2_num_train_epochs=0 must be a positive number"),
        (SmartBertConfig, {"projection_size": 1.5}, r"projection_size=1.5 must be a positive integer"),
        (SmartBertConfig, {"selection_split": 1.0}, r"selection_split=1.0 is out of range: it must lie in \(0, 1\), or be None"),
        (SmartBertConfig, {"stage1_temperature": None}, r"stage1_temperature=None must be > 0"),
        (PabeeConfig, {"patience": 1.5}, r"patience=1.5 must be an integer >= 0"),
    ],
)
def test_bad_method_options(tmp_path, config_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        toy_args(config_class, tmp_path, **kwargs)


def test_trainer_needs_its_method_config(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(ValueError, match="needs its method's config"):
        PabeeTrainer(model=toy_model(), args=TrainingArguments(output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="2 values but the model has 4 exits"):
        PabeeTrainer(model=toy_model(), args=toy_args(PabeeConfig, tmp_path, exit_loss_weights=[1.0, 2.0]), train_dataset=ToyTask(8)).train()


@pytest.mark.parametrize("config_class, trainer_class", [(DeeBertConfig, DeeBertTrainer), (RomeBertConfig, RomeBertTrainer)])
def test_entropy_methods_save_patience_on_regression(tmp_path, config_class, trainer_class):
    """Entropy is defined for classification only: on STS-B the model is saved with the regression-capable rule."""
    regression = trainer_class(model=toy_model(num_labels=1), args=toy_args(config_class, tmp_path, task="stsb"))
    assert regression.model.exit_config.exit_strategy == "patience"
    classification = trainer_class(model=toy_model(), args=toy_args(config_class, tmp_path))
    assert classification.model.exit_config.exit_strategy == "entropy"


@pytest.mark.parametrize("regression_distillation", [False, True])
def test_romebert_distils_on_regression_only_when_asked(tmp_path, regression_distillation):
    """On a regression task the exits learn from the labels alone unless `regression_distillation` adds the squared
    error to the final exit's value (a classification task always distils: the test below)."""
    from types import SimpleNamespace

    from hf_multiexit.losses import task_loss

    args = toy_args(RomeBertConfig, tmp_path, task="stsb", regression_distillation=regression_distillation)
    trainer = RomeBertTrainer(model=toy_model(num_labels=1), args=args)
    labels = torch.tensor([1.0, 4.0])
    exits, final = [torch.tensor([[0.5], [3.0]]), torch.tensor([[2.0], [2.5]])], torch.tensor([[1.5], [4.5]])
    terms = trainer.objective(SimpleNamespace(all_logits=[*exits, final]), labels)
    labels_only = sum(task_loss(z, labels, "regression") for z in exits)
    distilled = sum(0.1 * task_loss(z, labels, "regression") + 0.9 * (z - final).squeeze(-1) ** 2 for z in exits)
    torch.testing.assert_close(terms["exits"], distilled if regression_distillation else labels_only)
    torch.testing.assert_close(terms["final"], task_loss(final, labels, "regression"))


def test_romebert_always_distils_on_classification(tmp_path):
    from types import SimpleNamespace

    from hf_multiexit.losses import distillation_loss, task_loss

    classifier = RomeBertTrainer(model=toy_model(), args=toy_args(RomeBertConfig, tmp_path))
    logits = [torch.tensor([[2.0, -1.0]]), torch.tensor([[0.0, 3.0]])]
    expected = 0.1 * task_loss(logits[0], torch.tensor([0]), "single_label_classification") + 0.9 * distillation_loss(
        logits[0], logits[1], 3.0, "single_label_classification")
    torch.testing.assert_close(classifier.objective(SimpleNamespace(all_logits=logits), torch.tensor([0]))["exits"], expected)


def test_romebert_warns_when_regression_ignores_a_changed_gamma(tmp_path):
    from transformers.testing_utils import CaptureLogger

    from hf_multiexit.trainers import romebert_trainer

    with CaptureLogger(romebert_trainer.logger) as changed:
        RomeBertTrainer(model=toy_model(num_labels=1), args=toy_args(RomeBertConfig, tmp_path, task="stsb", gamma=0.5))
    assert "gamma=0.5 and temperature=3.0 apply only with regression_distillation=True" in changed.out
    with CaptureLogger(romebert_trainer.logger) as default:  # the defaults: an info line, below the default level
        RomeBertTrainer(model=toy_model(num_labels=1), args=toy_args(RomeBertConfig, tmp_path, task="stsb"))
    assert default.out == ""


class ToyRegression(ToyTask):
    """ToyTask's sentences with float targets around 3 (the label plus 2.5), like STS-B's 0-5 scores."""

    def __getitem__(self, i):
        return {**super().__getitem__(i), "labels": self.labels[i].float() + 2.5}


@pytest.mark.slow
@pytest.mark.parametrize("config_class, trainer_class", [(PabeeConfig, PabeeTrainer), (DeeBertConfig, DeeBertTrainer)])
def test_regression_exits_start_at_the_mean_label(tmp_path, config_class, trainer_class):
    data = ToyRegression(16)
    expected = float(data.labels.float().mean()) + 2.5
    args = dict(task="stsb", learning_rate=0.0, max_steps=1)
    trainer = trainer_class(model=toy_model(num_labels=1), args=toy_args(config_class, tmp_path, **args), train_dataset=data)
    trainer.train()
    biases = [head.classifier.bias.item() for head in trainer.model.bert.exits]
    assert biases == pytest.approx([expected] * len(biases))
    # Off, or on a classification task, the biases keep their initial zeros.
    off_args = toy_args(config_class, tmp_path, init_regression_bias=False, **args)
    off = trainer_class(model=toy_model(num_labels=1), args=off_args, train_dataset=data)
    off.train()
    assert all(head.classifier.bias.item() == 0.0 for head in off.model.bert.exits)
    classification_args = toy_args(config_class, tmp_path, learning_rate=0.0, max_steps=1)
    classification = trainer_class(model=toy_model(), args=classification_args, train_dataset=ToyTask(16))
    classification.train()
    assert all(torch.equal(head.classifier.bias, torch.zeros(2)) for head in classification.model.bert.exits)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return (data[i] for i in range(len(data)))

    streamed = trainer_class(model=toy_model(num_labels=1), args=toy_args(config_class, tmp_path, **args), train_dataset=Stream())
    with pytest.raises(ValueError, match="needs a training set with a length to average its labels over; got Stream"):
        streamed.train()


def test_label_mean_of_datasets_and_torch_datasets():
    from datasets import Dataset as HFDataset

    from hf_multiexit.trainers.base import label_mean

    assert float(label_mean(HFDataset.from_dict({"label": [1.0, 2.0, 4.5]}))) == pytest.approx(2.5)
    assert label_mean([{"labels": torch.tensor([1.0, 3.0])}, {"labels": torch.tensor([2.0, 5.0])}]).tolist() == [1.5, 4.0]
    with pytest.raises(ValueError, match="no 'label' or 'labels' column; its columns are \\['score'\\]"):
        label_mean(HFDataset.from_dict({"score": [1.0]}))


def test_regression_bias_start_reaches_the_trained_copies_under_lora(tmp_path):
    """With LoRA the exit heads are PEFT `modules_to_save`: the trained copy starts at the mean, the frozen original
    keeps its bias."""
    from hf_multiexit.lora import add_lora

    data = ToyRegression(16)
    model = add_lora(toy_model(num_labels=1), r=2)
    args = toy_args(PabeeConfig, tmp_path, task="stsb", learning_rate=0.0, max_steps=1)
    PabeeTrainer(model=model, args=args, train_dataset=data).train()
    biases = {name: p.item() for name, p in model.named_parameters() if name.endswith("classifier.bias")}
    expected = float(data.labels.float().mean()) + 2.5
    trained = [v for k, v in biases.items() if "modules_to_save" in k]
    assert len(trained) == 4 and trained == pytest.approx([expected] * 4)
    assert [v for k, v in biases.items() if "original_module" in k] == [0.0] * 4
