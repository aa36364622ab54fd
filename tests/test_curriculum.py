"""Curriculum training: pacing formulas, difficulty scorers, the sampler's schedule, resuming at the same batch with
the checkpoint's order, layer-wise vs. last-layer distillation, and a short run on the real MiniLM-L6 and SST-2."""

import json
import math
from collections import Counter

import pytest
import torch

from hf_multiexit import CurriculumConfig, CurriculumTrainer
from hf_multiexit.losses import chained_distillation_loss, task_loss
from hf_multiexit.trainers.curriculum import (
    PACING_FUNCTIONS,
    SAMPLING_MODES,
    CurriculumSampler,
    baby_steps,
    depth_weighted_loss_difficulty,
    difficulty_order,
    first_correct_exit_difficulty,
    length_difficulty,
    linear_competence,
    loss_difficulty,
    sqrt_competence,
)
from test_cli import train_report
from test_trainers import ToyTask, toy_args, toy_model, weights

SINGLE = "single_label_classification"


def test_pacing_functions_match_their_formulas():
    assert set(PACING_FUNCTIONS) == {"sqrt", "linear", "baby_steps"}
    assert sqrt_competence(0, 100, 0.2, 4) == pytest.approx(0.2)
    assert sqrt_competence(30, 100, 0.2, 4) == pytest.approx(math.sqrt(30 * (1 - 0.04) / 100 + 0.04))
    assert sqrt_competence(100, 100, 0.2, 4) == pytest.approx(1.0) and sqrt_competence(500, 100, 0.2, 4) == 1.0
    assert [linear_competence(t, 100, 0.2, 4) for t in (0, 50, 100, 200)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    assert [baby_steps(t, 100, 0.2, 4) for t in (0, 24, 25, 74, 75, 99, 300)] == [0.25, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_difficulty_scorers_and_order():
    # Label 0 everywhere: sample 0 right at exit 1, sample 1 only at exit 2, sample 2 never.
    logits = torch.tensor([[[2.0, 0.0], [3.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]], [[0.0, 2.0], [0.0, 1.0]]])
    labels = torch.tensor([0, 0, 0])

    def ce(z, y):
        return math.log(sum(math.exp(v) for v in z)) - z[y]

    loss = torch.tensor([sum(ce(z, 0) for z in sample) / 2 for sample in logits.tolist()])
    torch.testing.assert_close(loss_difficulty(logits, labels, None, SINGLE, [2, 4]), loss)
    # Depth-weighted: exits after layers 2 and 4 weigh 1/3 and 2/3.
    weighted = torch.tensor([(ce(a, 0) + 2 * ce(b, 0)) / 3 for a, b in logits.tolist()])
    torch.testing.assert_close(depth_weighted_loss_difficulty(logits, labels, None, SINGLE, [2, 4]), weighted)
    # Wrong only at the shallow exit vs. unsure at both: the mean calls the first harder, the depth weights the second.
    split = torch.tensor([[[0.0, 3.0], [3.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    assert difficulty_order(loss_difficulty(split, labels[:2], None, SINGLE, [2, 4])) == [1, 0]
    assert difficulty_order(depth_weighted_loss_difficulty(split, labels[:2], None, SINGLE, [2, 4])) == [0, 1]
    torch.testing.assert_close(
        first_correct_exit_difficulty(logits, labels, None, SINGLE, [2, 4]),
        torch.tensor([1.0, 2.0, 3.0]) + loss / (1 + loss),
    )
    lengths = torch.tensor([5, 2])
    torch.testing.assert_close(length_difficulty(None, None, lengths, SINGLE, [2, 4]), torch.tensor([5.0, 2.0]))
    assert difficulty_order(torch.tensor([3.0, 1.0, 2.0, 1.0])) == [1, 3, 2, 0]  # ties keep dataset order
    with pytest.raises(ValueError, match="first_correct_exit' needs a classification task"):
        first_correct_exit_difficulty(logits[:, :, :1], labels.float(), None, "regression", [2, 4])


@pytest.mark.parametrize("sampling", SAMPLING_MODES)
def test_sampler_draws_every_batch_from_the_competence_pool(sampling):
    size, batch, per_step, total, c0 = 40, 4, 2, 6, 0.2
    order = list(reversed(range(size)))  # sample 39 is the easiest

    def competence(step):
        return sqrt_competence(step, total, c0, 4)

    sampler = CurriculumSampler(size, batch, per_step, competence, seed=7, order_fn=lambda: order, sampling=sampling)
    assert sampler.pool_size(0) == 8 and sampler.pool_size(total) == size
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) == size and indices == list(sampler)  # deterministic in (seed, epoch)
        step_size, steps = batch * per_step, size // (batch * per_step)
        for s in range(steps):
            pool = max(step_size, math.ceil(competence(epoch * steps + s) * size))
            drawn = indices[s * step_size : (s + 1) * step_size]
            assert len(set(drawn)) == step_size and set(drawn) <= set(order[:pool]), (epoch, s)
        epochs.append(indices)
    assert epochs[0] != epochs[1]
    assert set(epochs[0][:8]) <= set(range(32, 40))  # step 0: only the 8 easiest
    # Two processes (or micro-steps) with batch 4 share out the samples one process with batch 8 trains on.
    single = CurriculumSampler(size, per_step * batch, 1, competence, seed=7, order_fn=lambda: order, sampling=sampling)
    single.set_epoch(1)
    assert list(single) == epochs[1]
    uneven = CurriculumSampler(10, 4, 1, lambda step: 1.0, seed=0, order_fn=lambda: range(10))
    assert len(list(uneven)) == 10  # last batch of 2
    wrong = CurriculumSampler(10, 4, 1, lambda step: 1.0, seed=0, order_fn=lambda: range(9))
    with pytest.raises(ValueError, match="orders 9 samples but the training set has 10"):
        list(wrong)


def test_pass_sampling_sees_the_pool_once_before_any_sample_twice():
    """`sampling="pass"`: with the whole set in the pool an epoch is a permutation of it; with a fixed pool the
    counts differ by at most one; samples admitted later join the current pass. Independent draws (the old
    behaviour, still reachable) leave about a third of a full pool unseen in an epoch."""
    size, batch = 200, 8
    full = CurriculumSampler(size, batch, 1, lambda step: 1.0, seed=3, order_fn=lambda: range(size))
    assert sorted(full) == list(range(size))
    fixed = Counter(CurriculumSampler(size, batch, 1, lambda step: 0.25, seed=3, order_fn=lambda: range(size)))
    assert set(fixed) == set(range(50)) and max(fixed.values()) - min(fixed.values()) <= 1
    growing = list(CurriculumSampler(size, batch, 1, lambda step: min(1.0, 0.2 + 0.05 * step), seed=3,
                                     order_fn=lambda: range(size)))
    counts = Counter(growing)
    assert len(counts) == size and max(counts.values()) <= 2  # every sample seen, none a third time
    independent = CurriculumSampler(size, batch, 1, lambda step: 1.0, seed=3, order_fn=lambda: range(size),
                                    sampling="independent")
    assert 0.5 * size < len(set(independent)) < 0.75 * size
    with pytest.raises(ValueError, match=r"sampling='random' is not one of \['pass', 'independent'\]"):
        CurriculumSampler(size, batch, 1, lambda step: 1.0, seed=3, order_fn=lambda: range(size), sampling="random")


def record_sampler_epochs(monkeypatch):
    """Every epoch of indices any CurriculumSampler yields, in order."""
    epochs = []
    original = CurriculumSampler.__iter__

    def recording(self):
        epochs.append(list(original(self)))
        return iter(epochs[-1])

    monkeypatch.setattr(CurriculumSampler, "__iter__", recording)
    return epochs


def test_curriculum_orders_by_the_warmup_model_and_resumes_at_the_same_batch(tmp_path, monkeypatch):
    data = ToyTask(32)
    epochs = record_sampler_epochs(monkeypatch)
    extra = dict(per_device_train_batch_size=8, num_train_epochs=2, difficulty_scorer="loss", initial_competence=0.25)
    model = toy_model()
    trainer = CurriculumTrainer(
        model=model, args=toy_args(CurriculumConfig, tmp_path, save_strategy="steps", save_steps=3, **extra), train_dataset=data
    )
    assert trainer.stages == ("warmup", "curriculum")
    warmed = {}
    original_begin = trainer.begin_stage
    trainer.begin_stage = lambda index: (warmed.setdefault(index, weights(model)), original_begin(index))
    trainer.train()
    assert len(epochs) == 2  # the warm-up stage samples uniformly, the curriculum stage's two epochs
    # The order is the warm-up model's mean exit loss, easiest first.
    scorer = toy_model()
    scorer.load_state_dict(warmed[1])
    ids = torch.stack([data[i]["input_ids"] for i in range(32)])
    with torch.no_grad():
        logits = torch.stack(scorer.eval()(ids, output_all_exits=True).all_logits, dim=1)
    loss = torch.stack([task_loss(logits[:, e], data.labels, SINGLE) for e in range(4)]).mean(0)
    order = json.loads((tmp_path / "out" / "stage-2" / "checkpoint-3" / "trainer_state.json").read_text())[
        "stateful_callbacks"]["CurriculumCallback"]["args"]["order"]
    assert order == difficulty_order(loss)
    assert set(epochs[0][:8]) <= set(order[: math.ceil(0.25 * 32)])  # step 0 draws from the easiest quarter
    # Resume mid-epoch (step 3 of 4) from other initial weights: same order from the checkpoint (no rescoring),
    # same batches, same final weights.
    resumed_model = toy_model(seed=5)
    resumed = CurriculumTrainer(model=resumed_model, args=toy_args(CurriculumConfig, tmp_path, **extra), train_dataset=data)
    resumed.difficulty_scores = lambda dataset: pytest.fail("a resumed curriculum must reuse the checkpoint's order")
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "stage-2" / "checkpoint-3"))
    assert epochs[2:] == epochs[:2]
    for name, value in weights(model).items():
        torch.testing.assert_close(weights(resumed_model)[name], value, msg=name)


def test_length_curriculum_has_one_stage_and_orders_by_tokens(tmp_path):
    data = ToyTask(16)
    data.lengths = torch.arange(16) % 5 + 3

    class Lengths(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            item = dict(data[i])
            item["attention_mask"] = (torch.arange(8) < data.lengths[i]).long()
            return item

    args = toy_args(CurriculumConfig, tmp_path, difficulty_scorer="length", pacing="baby_steps", num_train_epochs=1)
    trainer = CurriculumTrainer(model=toy_model(), args=args, train_dataset=Lengths())
    assert trainer.stages == ("curriculum",)
    trainer.train()
    sampler = trainer.callback_handler.callbacks[-1].sampler
    assert sampler.order == difficulty_order(data.lengths.float())
    assert trainer.model.exit_config.exit_strategy == "patience"


@pytest.mark.parametrize("distillation, teachers", [("layerwise", [1, 2, 3]), ("last_layer", [3, 3, 3])])
def test_distillation_teachers(tmp_path, distillation, teachers):
    data = ToyTask(8)
    model = toy_model().train()
    args = toy_args(CurriculumConfig, tmp_path, distillation=distillation, gamma=0.3, temperature=2.0)
    trainer = CurriculumTrainer(model=model, args=args, train_dataset=data)
    ids = torch.stack([data[i]["input_ids"] for i in range(8)])
    out = model(ids, output_all_exits=True)
    terms = trainer.objective(out, data.labels[:8])
    expected = chained_distillation_loss(out.all_logits, data.labels[:8], SINGLE, teachers, 0.3, 2.0)
    assert list(terms) == [distillation]
    torch.testing.assert_close(terms[distillation], expected)


def test_curriculum_command_on_real_minilm_and_sst2(minilm_path, glue_dir, tmp_path):
    out = tmp_path / "curriculum"
    report = train_report(minilm_path, glue_dir, out, "curriculum", "--max_train_samples", "64", "--exit_pooling", "mean",
                          "--learning_rate", "1e-4", "--difficulty_scorer", "first_correct_exit", "--distillation",
                          "last_layer")
    assert report["config"]["distillation"] == "last_layer"
    assert json.loads((out / "exit_config.json").read_text())["exit_strategy"] == "patience"


def test_warmup_and_curriculum_stages_share_one_optimizer_and_schedule(tmp_path):
    """The two stages are one run: the learning rate follows one linear decay over the steps of both (no second
    warm-up or decay), and Adam's state carries over (its step count runs on)."""
    data = ToyTask(32)
    args = toy_args(CurriculumConfig, tmp_path, per_device_train_batch_size=8, num_train_epochs=2,
                    difficulty_warmup_epochs=1, learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=0,
                    logging_steps=1)
    trainer = CurriculumTrainer(model=toy_model(), args=args, train_dataset=data)
    trainer.train()
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    total = 4 + 8  # 1 warm-up epoch and 2 curriculum epochs of 4 steps
    assert trainer.stage_steps(0) == 4 and trainer.stage_steps(1) == 8
    # The log (stage 2's Trainer state) holds the rate each step took: stage 2 continues at step 4 of the 12 where
    # stage 1 stopped (a restart would begin again at 1e-3).
    assert rates == pytest.approx([1e-3 * (1 - t / total) for t in range(4, total)])
    state = trainer.optimizer.optimizer.state if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer.state
    steps = {float(s["step"]) for s in state.values() if "step" in s}
    assert steps == {float(total)}


def test_shared_schedule_false_restarts_optimizer_and_schedule(tmp_path):
    """`shared_schedule=False`: the curriculum stage starts a new schedule (at the peak rate again) and optimizer."""
    args = toy_args(CurriculumConfig, tmp_path, per_device_train_batch_size=8, num_train_epochs=2,
                    difficulty_warmup_epochs=1, learning_rate=1e-3, lr_scheduler_type="linear", warmup_steps=0,
                    logging_steps=1, shared_schedule=False)
    trainer = CurriculumTrainer(model=toy_model(), args=args, train_dataset=ToyTask(32))
    trainer.train()
    rates = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    assert rates == pytest.approx([1e-3 * (1 - t / 8) for t in range(8)])
    state = trainer.optimizer.optimizer.state if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer.state
    assert {float(s["step"]) for s in state.values() if "step" in s} == {8.0}
