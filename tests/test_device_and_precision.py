"""Device, precision and deployment mechanics of the early-exit model: host synchronisations per layer, float32
exit decisions in half precision, attention through transformers' mask utilities (eager = SDPA = flex attention),
gradient checkpointing, dynamic int8 quantization, compiled segments, device hooks, and device-correct evaluation.

The device-sensitive tests run on `$HF_MULTIEXIT_TEST_DEVICE` (default `cpu`); `benchmarks/gpu_check.py` runs them
with `cuda`. Dynamic quantization is CPU-only in PyTorch, so its test always runs on the CPU.
"""

import os
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from hf_multiexit import MultiExitBertForSequenceClassification
from hf_multiexit.evaluation import all_exit_logits, run_inference, simulate_exits
from hf_multiexit.models.multiexit_bert.exit_strategies import entropy
from test_evaluation import collate, toy_set
from test_modeling import NUM_LAYERS, between_values, one_by_one, padded_batch, spread_threshold, tiny_model

DEVICE = torch.device(os.environ.get("HF_MULTIEXIT_TEST_DEVICE", "cpu"))


class HostSyncCounter(TorchDispatchMode):
    """Counts the operations that make the host wait for the device: reading a value back (`.item()`, `int(t)`,
    `bool(t)`: `aten._local_scalar_dense`), outputs whose size depends on the data (`nonzero`, `masked_select`,
    indexing with a boolean mask), copies to the CPU from another device, and `.tolist()`, which reads the data
    without dispatching an op and is counted by patching it. On the CPU nothing waits, but the same calls are the
    ones that stall an accelerator, so the count is the same on every device."""

    SYNCING = {
        torch.ops.aten._local_scalar_dense.default,
        torch.ops.aten.nonzero.default,
        torch.ops.aten.masked_select.default,
    }
    BOOLEAN_INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.SYNCING:
            self.count += 1
        elif func in self.BOOLEAN_INDEXING and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.count += 1
        elif func is torch.ops.aten._to_copy.default and kwargs.get("device") == torch.device("cpu") and args[0].device.type != "cpu":
            self.count += 1
        return func(*args, **kwargs)

    def __enter__(self):
        tolist = self._tolist = torch.Tensor.tolist

        def counted_tolist(tensor):
            self.count += 1
            return tolist(tensor)

        torch.Tensor.tolist = counted_tolist
        return super().__enter__()

    def __exit__(self, *exc_info):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc_info)


def syncs_per_layer(model, ids, mask, boundaries, **exit_kwargs):
    """`(output, counts)`: `counts[0]` are the host synchronisations before the first of `boundaries` (modules run
    once per layer, in order) and `counts[k]` those from the k-th boundary's call to the next (layer k's work and
    its exit check)."""
    marks = []
    hooks = [module.register_forward_pre_hook(lambda *_: marks.append(counter.count)) for module in boundaries]
    counter = HostSyncCounter()
    try:
        with torch.no_grad(), counter:
            out = model(ids, mask, **exit_kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    edges = [0, *marks, counter.count]
    return out, [b - a for a, b in zip(edges[:-1], edges[1:])]


def expected_syncs(exit_layers: torch.Tensor, checked: set[int]) -> list[int]:
    """The documented count without skip gates: 1 before the first layer; per checked exit below the last layer, 1
    (who stays) plus 1 (padding cut) when some samples leave and others stay; nothing for other layers."""
    counts = [1]
    for layer in range(1, int(exit_layers.max()) + 1):
        running = int((exit_layers >= layer).sum())
        leaving = int((exit_layers == layer).sum())
        counts.append(0 if layer not in checked or layer == NUM_LAYERS else 1 + int(0 < leaving < running))
    return counts


@pytest.mark.parametrize("batch_size", [1, 32])
@pytest.mark.parametrize("case", ["entropy", "patience", "confidence_from_layer_3"])
def test_host_synchronisations_per_layer_are_the_documented_minimum(case, batch_size):
    model = tiny_model().to(DEVICE).requires_grad_(False)
    ids, mask, _ = padded_batch(32)
    ids, mask = ids.to(DEVICE), mask.to(DEVICE)
    kwargs = {
        "entropy": lambda: dict(exit_strategy="entropy", entropy_threshold=spread_threshold(model, ids, mask)),
        "patience": lambda: dict(exit_strategy="patience", patience=1),
        "confidence_from_layer_3": lambda: dict(
            exit_strategy="confidence", min_exit_layer=3,
            confidence_threshold=between_values(model(ids, mask, output_all_exits=True).all_logits[2].softmax(-1).amax(-1)),
        ),
    }[case]()
    ids, mask = ids[:batch_size], mask[:batch_size]
    out, counts = syncs_per_layer(model, ids, mask, model.bert.encoder.layer, **kwargs)
    checked = {layer for layer in range(1, NUM_LAYERS + 1) if case != "confidence_from_layer_3" or layer >= 3}
    assert counts == expected_syncs(out.exit_layers.cpu(), checked), (case, out.exit_layers.tolist())
    assert max(counts) <= 2
    if batch_size > 1:  # the case must exercise compaction: samples leave at different layers
        assert len(set(out.exit_layers.tolist())) > 1
    if DEVICE.type == "cuda":
        # The same bound from CUDA's own account of the calls that synchronise (each reported as a warning).
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                model(ids, mask, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        reported = [w for w in caught if "synchroniz" in str(w.message)]
        assert len(reported) <= sum(counts), [str(w.message) for w in reported]


def test_host_synchronisations_with_skip_gates_stay_within_four_per_layer():
    model = tiny_model(use_skip_gates=True).to(DEVICE)
    ids, mask, _ = padded_batch(32)
    with torch.no_grad():
        for gate in model.bert.skip_gates:  # some samples skip some layers, others do not
            gates = gate(model.bert.embeddings(ids.to(DEVICE)), mask.to(DEVICE)).cpu()
            gate.score.bias -= torch.logit(torch.tensor(between_values(gates))).to(DEVICE)
        threshold = spread_threshold(model, ids.to(DEVICE), mask.to(DEVICE))
    out, counts = syncs_per_layer(
        model, ids.to(DEVICE), mask.to(DEVICE), model.bert.skip_gates, exit_strategy="skip", entropy_threshold=threshold
    )
    assert counts[0] == 1 and max(counts[1:]) <= 4, counts
    assert (out.layers_run < out.exit_layers).any() and len(set(out.exit_layers.tolist())) > 1


def test_half_precision_exit_decisions_are_made_in_float32():
    """A bf16 model decides on its bf16 logits upcast to float32: the float32 rule replayed on those logits gives
    its exits, where deciding in bf16 arithmetic would not (the threshold is placed between the two)."""
    model = tiny_model().to(DEVICE, torch.bfloat16)
    ids, mask, lengths = padded_batch(32)
    ids, mask = ids.to(DEVICE), mask.to(DEVICE)
    with torch.no_grad():
        first = model(ids, mask, output_all_exits=True).all_logits[0]  # what the first check sees, bit for bit
    assert first.dtype == torch.bfloat16
    in_float32 = entropy(first).cpu().double()
    in_bf16 = torch.special.entr(torch.softmax(first, dim=-1)).sum(dim=-1).cpu().double()
    # A threshold between the two entropies of the sample where they differ most, and far from every float32 value.
    sample = int((in_float32 - in_bf16).abs().argmax())
    threshold = float((in_float32[sample] + in_bf16[sample]) / 2)
    assert (in_float32 - threshold).abs().min() > 1e-4
    with torch.no_grad():
        out = model(ids, mask, exit_strategy="entropy", entropy_threshold=threshold)
    assert torch.equal((out.exit_layers == 1).cpu(), in_float32 < threshold)
    assert not torch.equal(in_float32 < threshold, in_bf16 < threshold)
    # One sample at a time (the Python path of `decide_one`) decides alike.
    for i in (sample, *range(4)):
        alone = ids[i : i + 1, : lengths[i]]
        with torch.no_grad():
            z = model(alone, output_all_exits=True).all_logits
            layer = int(model(alone, exit_strategy="entropy", entropy_threshold=threshold).exit_layers)
        below = [bool(entropy(logits) < threshold) for logits in z[:-1]] + [True]
        assert layer == below.index(True) + 1
    # Skip gates also decide `g >= r` in float32.
    gated = tiny_model(use_skip_gates=True).to(DEVICE, torch.bfloat16)
    with torch.no_grad():
        assert gated.bert.skip_gates[0](gated.bert.embeddings(ids), mask).dtype == torch.float32


def with_attention(model, implementation):
    model.set_attn_implementation(implementation)
    assert model.bert.encoder.layer[0].attention.self.config._attn_implementation == implementation
    return model


@pytest.fixture
def uncompiled_flex_attention(monkeypatch):
    """flex attention without `torch.compile` (PyTorch's reference implementation of the same attention, which
    `torch.compile` fuses): compiling its kernel for every batch shape takes minutes on a CPU. transformers keeps the
    compiled function in a singleton, which starts afresh here."""
    from transformers.integrations.flex_attention import WrappedFlexAttention

    monkeypatch.setattr(torch, "compile", lambda function=None, **kwargs: function)
    monkeypatch.setattr(WrappedFlexAttention, "_instance", None)
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")


@pytest.mark.parametrize("head", [dict(exit_head="pooler"), dict(exit_head="attention", exit_pooling="mean")])
def test_eager_sdpa_and_flex_attention_give_the_same_exits(head, uncompiled_flex_attention):
    ids, mask, _ = padded_batch(32, max_len=20)
    ids, mask = ids.to(DEVICE), mask.to(DEVICE)
    reference = with_attention(tiny_model(**head).to(DEVICE), "eager")
    cases = [
        dict(exit_strategy="entropy", entropy_threshold=spread_threshold(reference, ids, mask)),
        dict(exit_strategy="patience", patience=1),
        dict(exit_strategy="none"),
    ]
    with torch.no_grad():
        expected = [reference(ids, mask, **kw) for kw in cases]
        for implementation in ("sdpa", "flex_attention"):
            model = with_attention(tiny_model(**head).to(DEVICE), implementation)
            for kw, want in zip(cases, expected):
                got = model(ids, mask, **kw)
                assert torch.equal(got.exit_layers, want.exit_layers), (implementation, kw)
                torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)
    assert len(set(expected[0].exit_layers.tolist())) > 2  # a real mix of exits


@pytest.mark.slow
def test_eager_and_sdpa_give_the_same_exits_on_real_minilm_over_sst2_dev(minilm_path, minilm_tokenizer, glue_dir):
    """SST-2 dev through seeded (untrained) exits on the real MiniLM-L6, batch 32: eager and SDPA attention give the
    same exit layers under entropy and patience, and logits within 1e-4, on every second of the 872 sentences (436:
    about 35 s on two CPU threads; all 872 took 53 s of CI's 15 minutes). The SDPA all-exits
    pass places the entropy threshold in the widest gap between the exits' values (their middle 40%), so that float
    rounding between the two attention kernels (logits differ by about 1e-6, these near-uniform entropies by less
    than one float32 step) cannot decide."""
    from hf_multiexit.data import load_glue, make_collator

    data = load_glue("sst2", data_dir=glue_dir, tokenizer=minilm_tokenizer, splits="validation")["validation"]
    assert len(data) == 872
    data = data.select(range(0, 872, 2))
    collator = make_collator(minilm_tokenizer)
    models = {}
    for implementation in ("eager", "sdpa"):
        torch.manual_seed(0)
        models[implementation] = MultiExitBertForSequenceClassification.from_pretrained(
            minilm_path, num_labels=2, exit_pooling="mean", attn_implementation=implementation
        ).to(DEVICE)
    all_logits, _ = all_exit_logits(models["sdpa"], data, collator, batch_size=32)
    entropies = np.sort(entropy(torch.from_numpy(all_logits[:, :-1])).numpy().ravel())
    middle = entropies[int(0.3 * len(entropies)) : int(0.7 * len(entropies))]
    widest = int(np.diff(middle).argmax())
    threshold = float(middle[widest : widest + 2].mean())
    # Entropies near ln 2 are float32 numbers 6e-8 apart; 8 of those steps leave 4 on each side of the threshold.
    assert np.diff(middle)[widest] >= 8 * np.spacing(np.float32(threshold)), "no gap wide enough between the entropies"
    top2 = np.sort(all_logits, axis=-1)
    assert (top2[..., -1] - top2[..., -2]).min() > 1e-5, "a near-tie would let rounding decide patience"
    for kwargs in (dict(exit_strategy="entropy", entropy_threshold=threshold), dict(exit_strategy="patience", patience=1)):
        replayed = simulate_exits(all_logits, models["sdpa"].config, **kwargs).exit_layers
        counts = np.bincount(replayed, minlength=7)[1:]
        assert (counts >= len(data) // 40).sum() >= 3, (kwargs, counts)  # a real mix of exit layers
        eager, sdpa = (run_inference(models[name], data, collator, batch_size=32, **kwargs) for name in ("eager", "sdpa"))
        np.testing.assert_array_equal(eager.exit_layers, sdpa.exit_layers, err_msg=str(kwargs))
        np.testing.assert_array_equal(sdpa.exit_layers, replayed, err_msg=str(kwargs))
        np.testing.assert_allclose(eager.logits, sdpa.logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("overrides", [dict(), dict(use_skip_gates=True, gate_mode="soft"), dict(use_skip_gates=True)])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(overrides):
    ids, mask, _ = padded_batch(8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])

    def step(checkpointing):
        model = tiny_model(**overrides).to(DEVICE).train()
        if checkpointing:
            model.gradient_checkpointing_enable()
        calls = []
        for layer in model.bert.encoder.layer:
            layer.attention.register_forward_hook(lambda *_: calls.append(1))
        torch.manual_seed(3)  # the same dropout masks in both runs; checkpointing replays them in the backward
        loss = model(ids.to(DEVICE), mask.to(DEVICE), labels=labels.to(DEVICE)).loss
        loss.backward()
        grads = {name: p.grad.cpu() for name, p in model.named_parameters() if p.grad is not None}
        return loss.item(), grads, len(calls)

    loss, grads, calls = step(checkpointing=False)
    loss_ckpt, grads_ckpt, calls_ckpt = step(checkpointing=True)
    assert calls == NUM_LAYERS and calls_ckpt == 2 * NUM_LAYERS  # the layers really were recomputed
    assert loss_ckpt == pytest.approx(loss, abs=1e-6)
    assert grads_ckpt.keys() == grads.keys() and len(grads) > 0
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=1e-6, rtol=0, msg=name)


def test_trainer_trains_with_gradient_checkpointing(tmp_path):
    """`TrainingArguments(gradient_checkpointing=True)` used to raise; two SGD steps now end at the weights of
    the same steps without checkpointing."""
    from transformers import Trainer, TrainingArguments

    data = toy_set(count=16)

    def train(checkpointing):
        model = tiny_model()
        args = TrainingArguments(
            output_dir=str(tmp_path / str(checkpointing)), gradient_checkpointing=checkpointing, max_steps=2,
            per_device_train_batch_size=8, optim="sgd", learning_rate=0.1, lr_scheduler_type="constant",
            report_to=[], save_strategy="no", use_cpu=DEVICE.type == "cpu", seed=5,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=collate)
        trainer.train()
        assert model.bert.encoder.layer[0].gradient_checkpointing == checkpointing
        return {name: p.detach().cpu() for name, p in model.named_parameters()}

    plain, checkpointed = train(False), train(True)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=0, msg=name)
    assert not torch.equal(plain["bert.exits.0.classifier.weight"], tiny_model().bert.exits[0].classifier.weight)


@pytest.mark.slow
@pytest.mark.parametrize(
    "head", [dict(exit_head="pooler"), dict(exit_head="linear"), dict(exit_head="attention"), dict(exit_pooling="mean"),
             dict(use_skip_gates=True)],
)
def test_dynamic_int8_quantization_runs_early_exit(head):
    """`quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)` used to convert the model and then fail in every
    forward (the pooled head read `pooler.weight`). Every exit head's quantized layers now run, at batch 1 and 32.
    Dynamic quantization scales activations per tensor, from the whole batch, so a sample's logits depend on the
    batch it is in: batch 32 equals batch 1 only up to that noise. It must still reproduce batch 1's exits for
    nearly every sample and agree with them in the rule without data-dependent decisions."""
    model = tiny_model(**head)
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(quantized.bert.exits[0].classifier, dynamic_linear)
    ran = set()
    for name, module in quantized.named_modules():
        if isinstance(module, dynamic_linear) and (".exits." in name or ".skip_gates." in name):
            module.register_forward_hook(lambda module, *_: ran.add(module))
    ids, mask, lengths = padded_batch(32)
    strategy = "skip" if head.get("use_skip_gates") else "entropy"
    with torch.no_grad():
        threshold = spread_threshold(quantized, ids, mask)
        for kwargs in (dict(exit_strategy=strategy, entropy_threshold=threshold), dict(exit_strategy="patience", patience=1),
                       dict(exit_strategy="static", exit_layer=2)):
            if strategy == "skip" and kwargs["exit_strategy"] == "patience":
                continue
            batched = quantized(ids, mask, **kwargs)
            layers, logits = one_by_one(quantized, ids, lengths, **kwargs)
            agree = batched.exit_layers == layers
            assert agree.float().mean() >= 0.9, (kwargs, batched.exit_layers, layers)
            if strategy != "skip":  # with gates, one exit layer can follow different skipped layers
                torch.testing.assert_close(batched.logits[agree], logits[agree], atol=0.25, rtol=0)
        assert torch.equal(batched.exit_layers, torch.full((32,), 2))  # static
        full = model(ids, mask, exit_strategy="none").logits
        torch.testing.assert_close(quantized(ids, mask, exit_strategy="none").logits, full, atol=0.25, rtol=0)
    expected = {m for n, m in quantized.named_modules() if isinstance(m, dynamic_linear) and (".exits." in n or ".skip_gates." in n)}
    assert ran == expected


@pytest.mark.slow
def test_compiled_segments_give_the_same_exits_with_a_bounded_number_of_graphs():
    """`compile_segments` compiles layers, exit heads and gates with dynamic shapes (backend "eager": Dynamo's
    tracing and guards, which decide recompilation, without code generation, which takes minutes on 2 cores). Each
    segment gets at most one graph per (mask or none) x (batch size 1 or more), 4 per kind of segment (layer, exit
    head with its own pooler, final head, gate: at most 16 here), whatever the shapes; new shapes after those
    variants compile nothing, and the exit loop's reads of the device stay outside the compiled graphs (no graph
    breaks)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    reference = tiny_model(use_skip_gates=True).to(DEVICE)
    model = tiny_model(use_skip_gates=True).to(DEVICE)
    model.compile_segments(backend="eager")
    # Sizes avoid the model's own (32, 16, 8, 4, 37): Dynamo would first take an equal size for the same symbol.
    shapes = [(24, 12), (7, 12), (1, 12), (3, 3), (19, 20), (5, 9), (1, 5), (27, 30), (13, 14), (2, 6), (1, 7), (22, 25)]
    graphs = []
    with torch.no_grad():
        for seed, (batch_size, length) in enumerate(shapes):
            ids, mask, _ = padded_batch(batch_size, seed=seed, max_len=length)
            ids, mask = ids.to(DEVICE), mask.to(DEVICE)
            threshold = spread_threshold(reference, ids, mask) if batch_size > 2 else 0.5
            for kwargs in (dict(exit_strategy="entropy", entropy_threshold=threshold), dict(exit_strategy="skip", entropy_threshold=threshold)):
                got, want = model(ids, mask, **kwargs), reference(ids, mask, **kwargs)
                assert torch.equal(got.exit_layers, want.exit_layers), (batch_size, length, kwargs)
                torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)
            graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[-1] <= 16, graphs
    assert graphs[-1] == graphs[len(shapes) // 2], graphs  # the second half's new shapes compiled nothing
    assert not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.parametrize("head", ["pooler", "linear"])
def test_device_map_with_offloaded_layers_gives_the_same_outputs(head, tmp_path):
    """`from_pretrained(..., device_map=...)` with the second half of the layers, their exits and the shared pooler
    offloaded (to disk on a CPU-only machine, to the CPU beside a GPU), so accelerate's hooks load their weights at
    each call and move the inputs: the heads run through their modules (a head that read `pooler.weight` would
    see an empty meta tensor), the pooler is not moved as a head's input, and the outputs equal the plain
    model's. (Attention heads read `nn.MultiheadAttention`'s parameters directly: offloading them needs
    `preload_module_classes=["ClsAttention"]` in `accelerate.dispatch_model`.)"""
    model = tiny_model(exit_head=head).to(DEVICE)
    model.save_pretrained(tmp_path / "model")
    ids, mask, _ = padded_batch(16)
    ids, mask = ids.to(DEVICE), mask.to(DEVICE)
    cases = [dict(exit_strategy="entropy", entropy_threshold=spread_threshold(model, ids, mask)), dict(exit_strategy="patience", patience=1)]
    with torch.no_grad():
        expected = [model(ids, mask, **kw) for kw in cases] + [model(ids, mask, output_all_exits=True)]
    first, second = (0 if DEVICE.type == "cuda" else "cpu"), ("cpu" if DEVICE.type == "cuda" else "disk")
    device_map = {"bert.embeddings": first, "bert.pooler": second}
    for i in range(NUM_LAYERS):
        device_map[f"bert.encoder.layer.{i}"] = device_map[f"bert.exits.{i}"] = first if i < NUM_LAYERS // 2 else second
    dispatched = MultiExitBertForSequenceClassification.from_pretrained(
        tmp_path / "model", device_map=device_map, offload_folder=str(tmp_path / "offload")
    ).eval()
    offloaded = dispatched.bert.encoder.layer[-1].attention.self.query.weight
    assert offloaded.device.type == "meta" or (second == "cpu" and offloaded.device.type == "cpu")
    with torch.no_grad():
        got = [dispatched(ids, mask, **kw) for kw in cases] + [dispatched(ids, mask, output_all_exits=True)]
    for g, e in zip(got, expected):
        assert g.logits.device == e.logits.device and torch.equal(g.exit_layers, e.exit_layers)
        torch.testing.assert_close(g.logits, e.logits, atol=1e-5, rtol=0)
    assert len(set(expected[0].exit_layers.tolist())) > 1


def test_run_inference_moves_batches_to_the_model_and_results_to_the_cpu():
    model = tiny_model().to(DEVICE)
    data = toy_set(count=20)
    result = run_inference(model, data, collate, batch_size=8, exit_strategy="patience", patience=1)
    logits, labels = all_exit_logits(model, data, collate, batch_size=8)
    assert isinstance(result.logits, np.ndarray) and isinstance(logits, np.ndarray) and result.seconds > 0
    assert logits.shape == (20, NUM_LAYERS, 3) and labels.shape == (20,)
    replayed = simulate_exits(logits, model.config, exit_strategy="patience", patience=1)
    np.testing.assert_array_equal(result.exit_layers, replayed.exit_layers)
    np.testing.assert_allclose(result.logits, replayed.logits, atol=1e-5)
    # bf16 logits come back as float32 arrays.
    half = run_inference(tiny_model().to(DEVICE, torch.bfloat16), data, collate, batch_size=8, exit_strategy="none")
    assert half.logits.dtype == np.float32



def test_evaluate_device_flag(tmp_path):
    """`hf-multiexit evaluate --device`: "auto" resolves to what is here, an absent or unknown device is refused
    before anything loads, naming the value and what to pass instead."""
    from hf_multiexit.evaluation import EvaluateArguments

    def arguments(device):
        return EvaluateArguments(model=str(tmp_path), output=str(tmp_path / "r.json"), task="sst2", device=device)

    expected = torch.accelerator.current_accelerator().type if torch.accelerator.is_available() else "cpu"
    assert arguments("auto").device == expected
    assert arguments("cpu").device == "cpu"
    with pytest.raises(ValueError, match="--device='gpu0' is not a device name"):
        arguments("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device='cuda': no cuda device is available here; use --device cpu"):
            arguments("cuda")
