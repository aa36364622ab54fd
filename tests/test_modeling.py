"""Mechanics of the multi-exit model on tiny random configs: exits, strategies, compaction, skip gates, errors."""

import pytest
import torch

from hf_multiexit import ExitConfig, MultiExitBertForSequenceClassification, MultiExitBertModel, MultiExitConfig
from hf_multiexit.models.multiexit_bert.exit_strategies import entropy

NUM_LAYERS = 4


def tiny_config(**overrides) -> MultiExitConfig:
    values = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=3,
        exit_head_hidden_size=16,
        gate_hidden_size=16,
        # Larger initial weights than BERT's 0.02 so that random exits disagree clearly: thresholds placed between
        # their values then sit far from float rounding noise.
        initializer_range=0.2,
    )
    values.update(overrides)
    return MultiExitConfig(**values)


def tiny_model(seed=0, **overrides) -> MultiExitBertForSequenceClassification:
    torch.manual_seed(seed)
    return MultiExitBertForSequenceClassification(tiny_config(**overrides)).eval()


def padded_batch(batch_size, seed=1, max_len=12):
    """Right-padded random inputs with lengths between 3 and max_len; returns (ids, mask, lengths)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, max_len + 1, (batch_size,), generator=gen)
    lengths[0] = max_len
    ids = torch.randint(1, 99, (batch_size, max_len), generator=gen)
    mask = (torch.arange(max_len)[None] < lengths[:, None]).long()
    return ids * mask, mask, lengths


def one_by_one(model, ids, lengths, **kw):
    """Each sample alone, unpadded: the reference that batched early exit must reproduce."""
    outs = [model(ids[i : i + 1, : lengths[i]], **kw) for i in range(ids.shape[0])]
    return torch.cat([o.exit_layers for o in outs]), torch.cat([o.logits for o in outs])


def between_values(values: torch.Tensor) -> float:
    """A threshold in the middle of the values, halfway between two of them, so that float rounding differences
    between batch sizes cannot move any value across it."""
    ordered = values.flatten().double().unique().sort().values
    quarter = len(ordered) // 4
    middle = ordered[quarter : len(ordered) - quarter]
    gaps = middle[1:] - middle[:-1]
    widest = int(gaps.argmax())
    assert gaps[widest] > 1e-5 * max(1.0, float(middle.abs().max())), "values too close to split robustly"
    return float((middle[widest] + middle[widest + 1]) / 2)


def spread_threshold(model, ids, mask):
    """An entropy threshold at which some samples leave early and others do not."""
    with torch.no_grad():
        out = model(ids, mask, output_all_exits=True)
    return between_values(torch.stack([entropy(z) for z in out.all_logits[:-1]]))


def strategy_cases(model, ids, mask):
    return [
        dict(exit_strategy="none"),
        dict(exit_strategy="static", exit_layer=2),
        dict(exit_strategy="entropy", entropy_threshold=spread_threshold(model, ids, mask)),
        dict(exit_strategy="entropy", entropy_threshold=0.999, normalize_entropy=True),
        dict(exit_strategy="confidence", confidence_threshold=0.36),
        dict(exit_strategy="patience", patience=1),
        dict(exit_strategy="patience", patience=0),
        dict(exit_strategy="entropy", entropy_threshold=10.0, min_exit_layer=3),
    ]


@pytest.mark.parametrize(
    "head", [dict(exit_head="pooler"), dict(exit_head="linear"), dict(exit_head="attention"), dict(exit_pooling="mean")]
)
@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_batched_early_exit_equals_one_by_one(head, batch_size):
    model = tiny_model(**head)
    ids, mask, lengths = padded_batch(batch_size)
    with torch.no_grad():
        for kw in strategy_cases(model, ids, mask):
            out = model(ids, mask, **kw)
            layers, logits = one_by_one(model, ids, lengths, **kw)
            assert torch.equal(out.exit_layers, layers), kw
            torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=0)


def test_strategies_do_what_they_say():
    model = tiny_model()
    ids, mask, _ = padded_batch(32)
    with torch.no_grad():
        full = model(ids, mask, output_all_exits=True)
        assert len(full.all_logits) == NUM_LAYERS
        assert (model(ids, mask, exit_strategy="none").exit_layers == NUM_LAYERS).all()
        assert (model(ids, mask, exit_strategy="static", exit_layer=3).exit_layers == 3).all()
        torch.testing.assert_close(model(ids, mask, exit_strategy="static", exit_layer=3).logits, full.all_logits[2])
        # confidence 0: every sample leaves at the first exit; entropy 0: nobody leaves early.
        everyone = model(ids, mask, exit_strategy="confidence", confidence_threshold=0.0)
        assert (everyone.exit_layers == 1).all()
        torch.testing.assert_close(everyone.logits, full.all_logits[0])
        nobody = model(ids, mask, exit_strategy="entropy", entropy_threshold=0.0)
        assert (nobody.exit_layers == NUM_LAYERS).all()
        torch.testing.assert_close(nobody.logits, full.all_logits[-1])
        # Entropy: each sample's exit is the first whose entropy is under the threshold.
        threshold = spread_threshold(model, ids, mask)
        out = model(ids, mask, exit_strategy="entropy", entropy_threshold=threshold)
        entropies = torch.stack([entropy(z) for z in full.all_logits])
        below = entropies < threshold
        below[-1] = True
        expected = below.float().argmax(dim=0) + 1
        assert torch.equal(out.exit_layers, expected)
        assert 1 < out.exit_layers.float().mean() < NUM_LAYERS
        # Patience t: leave at the first layer whose prediction equals the previous t ones.
        preds = torch.stack([z.argmax(-1) for z in full.all_logits])
        for t in (1, 2):
            out = model(ids, mask, exit_strategy="patience", patience=t)
            for i in range(ids.shape[0]):
                counter, expected_layer = 0, NUM_LAYERS
                for layer in range(1, NUM_LAYERS + 1):
                    if layer > 1:
                        counter = counter + 1 if preds[layer - 1, i] == preds[layer - 2, i] else 0
                    if counter >= t:
                        expected_layer = layer
                        break
                assert out.exit_layers[i] == expected_layer


def test_regression_patience_and_static():
    model = tiny_model(num_labels=1)
    ids, mask, lengths = padded_batch(16)
    with torch.no_grad():
        full = model(ids, mask, output_all_exits=True)
        diffs = torch.stack([(a - b).abs().squeeze(-1) for a, b in zip(full.all_logits[1:], full.all_logits[:-1])])
        tau = between_values(diffs[0])
        for kw in (dict(exit_strategy="patience", patience=1, regression_threshold=tau), dict(exit_strategy="static", exit_layer=2)):
            out = model(ids, mask, **kw)
            assert out.logits.shape == (16, 1)
            layers, logits = one_by_one(model, ids, lengths, **kw)
            assert torch.equal(out.exit_layers, layers)
            torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=0)
        out = model(ids, mask, exit_strategy="patience", patience=1, regression_threshold=tau)
        expected = torch.where(diffs[0] < tau, 2, 0)
        assert ((out.exit_layers == 2) == (expected == 2)).all()


def test_compaction_runs_layers_only_for_samples_still_in_the_batch():
    model = tiny_model()
    ids, mask, _ = padded_batch(32)
    seen = {}
    hooks = [
        layer.register_forward_hook(lambda mod, args, out, i=i: seen.__setitem__(i, seen.get(i, 0) + args[0].shape[0]))
        for i, layer in enumerate(model.bert.encoder.layer)
    ]
    threshold = spread_threshold(model, ids, mask)
    with torch.no_grad():
        seen.clear()
        out = model(ids, mask, exit_strategy="entropy", entropy_threshold=threshold)
        for i in range(NUM_LAYERS):
            assert seen.get(i, 0) == int((out.exit_layers > i).sum()), i
        assert torch.equal(out.layers_run, out.exit_layers)
        seen.clear()
        model(ids, mask, exit_strategy="static", exit_layer=2)
        assert seen == {0: 32, 1: 32}
    for hook in hooks:
        hook.remove()


def test_padding_columns_are_cut_after_long_samples_leave():
    model = tiny_model()
    ids, mask, lengths = padded_batch(8, max_len=20)
    widths = []
    hook = model.bert.encoder.layer[1].register_forward_hook(lambda mod, args, out: widths.append(args[0].shape[1]))
    with torch.no_grad():
        # Only the longest sample (index 0) leaves at layer 1: force that by confidence on its own logits.
        full = model(ids, mask, output_all_exits=True)
        conf = torch.softmax(full.all_logits[0], -1).amax(-1)
        others_max = float(conf[1:].max())
        if conf[0] > others_max:
            model(ids, mask, exit_strategy="confidence", confidence_threshold=others_max)
            assert widths[-1] == int(lengths[1:].max())
    hook.remove()
    # Whatever the data, outputs do not depend on how much padding the batch had.
    with torch.no_grad():
        wide_ids = torch.cat([ids, torch.zeros(8, 10, dtype=torch.long)], 1)
        wide_mask = torch.cat([mask, torch.zeros(8, 10, dtype=torch.long)], 1)
        a = model(ids, mask, exit_strategy="patience", patience=1)
        b = model(wide_ids, wide_mask, exit_strategy="patience", patience=1)
    assert torch.equal(a.exit_layers, b.exit_layers)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=0)


def test_exit_layers_subset():
    model = tiny_model(exit_layers=[2, 4])
    assert len(model.bert.exits) == 2
    ids, mask, lengths = padded_batch(9)
    with torch.no_grad():
        assert len(model(ids, mask, output_all_exits=True).all_logits) == 2
        out = model(ids, mask, exit_strategy="confidence", confidence_threshold=0.0)
        assert (out.exit_layers == 2).all()
        kw = dict(exit_strategy="patience", patience=1)
        layers, _ = one_by_one(model, ids, lengths, **kw)
        assert torch.equal(model(ids, mask, **kw).exit_layers, layers)
        assert set(layers.tolist()) <= {4}  # patience 1 needs two exits to agree: only possible at the 2nd exit
    with pytest.raises(ValueError, match=r"exit_layer=3 is not an exit.*\[2, 4\]"):
        model(ids, mask, exit_strategy="static", exit_layer=3)


def test_train_mode_runs_all_exits_and_returns_joint_loss():
    model = tiny_model().train()
    ids, mask, _ = padded_batch(6)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(ids, mask, labels=labels, exit_strategy="static", exit_layer=1)
    assert len(out.all_logits) == NUM_LAYERS and (out.exit_layers == NUM_LAYERS).all()
    ce = [torch.nn.functional.cross_entropy(z, labels) for z in out.all_logits]
    expected = sum(j * l for j, l in zip(range(1, NUM_LAYERS + 1), ce)) / sum(range(1, NUM_LAYERS + 1))
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert all(p.grad is not None for p in model.bert.exits.parameters())
    model.eval()
    with torch.no_grad():
        out = model(ids, mask, labels=labels)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.all_logits[-1], labels))


def test_multi_label_patience():
    model = tiny_model(problem_type="multi_label_classification")
    ids, mask, lengths = padded_batch(10)
    with torch.no_grad():
        layers, _ = one_by_one(model, ids, lengths, exit_strategy="patience", patience=1)
        assert torch.equal(model(ids, mask, exit_strategy="patience", patience=1).exit_layers, layers)
        loss = model(ids, mask, labels=torch.ones(10, 3)).loss
    assert torch.isfinite(loss)


def test_skip_gates_batched_equals_one_by_one_and_skipping_skips():
    model = tiny_model(use_skip_gates=True)
    ids, mask, lengths = padded_batch(32)
    with torch.no_grad():
        # Bias the gates so that some samples skip some layers and others do not.
        for gate in model.bert.skip_gates:
            gates = gate(model.bert.embeddings(ids), mask)
            gate.score.bias -= torch.logit(torch.tensor(between_values(gates)))
        out_all = model(ids, mask, output_all_exits=True)
        assert len(out_all.gate_probs) == NUM_LAYERS
        for threshold in (0.0, spread_threshold(model, ids, mask)):
            kw = dict(exit_strategy="skip", entropy_threshold=threshold)
            out = model(ids, mask, **kw)
            layers, logits = one_by_one(model, ids, lengths, **kw)
            assert torch.equal(out.exit_layers, layers)
            torch.testing.assert_close(out.logits, logits, atol=1e-4, rtol=0)
        out = model(ids, mask, exit_strategy="skip", entropy_threshold=0.0)
        assert (out.layers_run < NUM_LAYERS).any() and (out.layers_run > 0).any()
        # With entropy 0 nobody exits early, so the result must equal the hard-gated all-exits pass.
        torch.testing.assert_close(out.logits, out_all.all_logits[-1], atol=1e-4, rtol=0)
        # A gate forced to 1 skips its layer: the layer never runs.
        model.bert.skip_gates[1].score.bias.fill_(1e4)
        calls = []
        hook = model.bert.encoder.layer[1].register_forward_hook(lambda *a: calls.append(1))
        out = model(ids, mask, exit_strategy="skip", entropy_threshold=0.0)
        hook.remove()
        assert calls == [] and (out.layers_run <= NUM_LAYERS - 1).all()


def test_soft_and_hard_gate_gradients():
    model = tiny_model(use_skip_gates=True, gate_mode="hard").train()
    ids, mask, _ = padded_batch(4)
    out = model(ids, mask, labels=torch.tensor([0, 1, 2, 0]))
    out.loss.backward()
    # The straight-through estimator passes gradient to the gates even though the forward uses 0/1 weights.
    assert any(g.score.weight.grad is not None and g.score.weight.grad.abs().sum() > 0 for g in model.bert.skip_gates)


def test_cls_attention_equals_multihead_attention_at_cls():
    """Gates and attention exits compute the [CLS] query's attention from `nn.MultiheadAttention`'s parameters;
    it must give what that module's own forward gives, padding masked, with the same gradients."""
    from hf_multiexit.models.multiexit_bert.modeling_multiexit_bert import ClsAttention

    torch.manual_seed(0)
    module = ClsAttention(hidden_size=24, inner_size=16, num_heads=4, dropout=0.0)
    ids, mask, _ = padded_batch(6, max_len=9)
    hidden = torch.randn(*ids.shape, 24, requires_grad=True)

    def reference(h, m):
        x = torch.tanh(module.proj(h))
        padding = None if m is None else m == 0
        return module.attention(x[:, :1], x, x, key_padding_mask=padding, need_weights=False)[0][:, 0]

    for m in (mask, None):
        ours, theirs = module(hidden, m), reference(hidden, m)
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
        grads = [torch.autograd.grad(out.square().sum(), [hidden, module.attention.in_proj_weight]) for out in (ours, theirs)]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    # Padding really is masked: changing a padded position changes nothing.
    changed = hidden.detach().clone()
    changed[mask == 0] += 5.0
    torch.testing.assert_close(module(changed, mask), module(hidden, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(exit_strategy="early"), r"Unknown exit_strategy='early'; valid strategies are \['none', 'static'"),
        (dict(exit_strategy="entropy", treshold=0.1), r"Unknown exit argument\(s\) \['treshold'\]; valid exit arguments"),
        (dict(exit_strategy="entropy", entropy_threshold=-0.1), r"entropy_threshold=-0.1 is out of range"),
        (dict(exit_strategy="entropy", entropy_threshold=1.5, normalize_entropy=True), r"entropy_threshold=1.5.*\[0, 1\]"),
        (dict(exit_strategy="confidence", confidence_threshold=1.5), r"confidence_threshold=1.5 is out of range.*\[0.0, 1.0\]"),
        (dict(exit_strategy="static", exit_layer=7), r"exit_layer=7 is not an exit of this model; valid exit layers are \[1, 2, 3, 4\]"),
        (dict(exit_strategy="static"), r"exit_layer=None is not an exit"),
        (dict(exit_strategy="patience", patience=-1), r"patience=-1 is out of range: it must be an integer >= 0"),
        (dict(exit_strategy="patience", patience=1.5), r"patience=1.5 is out of range"),
        (dict(exit_strategy="entropy", min_exit_layer=9), r"min_exit_layer=9 is out of range"),
        (dict(exit_strategy="skip"), r"needs a model with skip gates.*Valid strategies here"),
    ],
)
def test_bad_exit_arguments(kwargs, message):
    model = tiny_model()
    ids, mask, _ = padded_batch(2)
    with pytest.raises(ValueError, match=message):
        model(ids, mask, **kwargs)


def test_strategy_that_does_not_fit_the_problem_type():
    model = tiny_model(num_labels=1)
    ids, mask, _ = padded_batch(2)
    for strategy in ("confidence", "entropy"):
        with pytest.raises(ValueError, match=rf"exit_strategy='{strategy}' does not fit problem_type='regression'.*'patience'"):
            model(ids, mask, exit_strategy=strategy)


def test_labels_outside_num_labels():
    model = tiny_model()
    ids, mask, _ = padded_batch(2)
    with pytest.raises(ValueError, match=r"Label 3 is outside num_labels=3: valid labels are 0..2"):
        model(ids, mask, labels=torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"Label -1 is outside"):
        model(ids, mask, labels=torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="NaN"):
        tiny_model(num_labels=1)(ids, mask, labels=torch.tensor([0.5, float("nan")]))


def test_bad_model_config():
    with pytest.raises(ValueError, match=r"exit_layers=\[1, 3\] is invalid.*ends with the last layer 4"):
        tiny_config(exit_layers=[1, 3])
    with pytest.raises(ValueError, match=r"exit_head='mlp' is not one of \['pooler', 'linear', 'attention', 'native'\]"):
        tiny_config(exit_head="mlp")
    with pytest.raises(ValueError, match=r"exit_pooling='max' is not one of \['cls', 'mean'\]"):
        tiny_config(exit_pooling="max")


def test_exit_config_defaults_overrides_and_roundtrip(tmp_path):
    model = tiny_model()
    ids, mask, _ = padded_batch(5)
    model.exit_config = ExitConfig(exit_strategy="static", exit_layer=2)
    with torch.no_grad():
        assert (model(ids, mask).exit_layers == 2).all()
        assert (model(ids, mask, exit_layer=3).exit_layers == 3).all()  # call-time kwargs override the defaults
        assert (model(ids, mask, exit_config=ExitConfig(exit_strategy="none")).exit_layers == NUM_LAYERS).all()
    assert model.exit_config.exit_layer == 2  # overriding does not mutate the stored defaults
    with pytest.raises(ValueError, match="is not an exit of this model"):
        model.exit_config = ExitConfig(exit_strategy="static", exit_layer=9)
    ExitConfig(exit_strategy="patience", patience=4).save_pretrained(tmp_path)
    assert ExitConfig.from_pretrained(tmp_path) == ExitConfig(exit_strategy="patience", patience=4)
    assert [p.name for p in tmp_path.iterdir()] == ["exit_config.json"]  # no temporary file left behind
    (tmp_path / "exit_config.json").write_text('{"exit_strategy": "entropy", "lookahead": 2, "format_version": 2}')
    with pytest.raises(ValueError, match=r"has field\(s\) \['lookahead'\] that this version does not know.*Upgrade"):
        ExitConfig.from_pretrained(tmp_path)


def test_base_model_is_the_multi_exit_network():
    model = tiny_model()
    ids, mask, _ = padded_batch(6)
    base = model.bert
    assert isinstance(base, MultiExitBertModel)
    with torch.no_grad():
        a = base(ids, mask, exit_strategy="patience", patience=1)
        b = model(ids, mask, exit_strategy="patience", patience=1)
    assert torch.equal(a.exit_layers, b.exit_layers) and torch.equal(a.logits, b.logits)
    assert "loss" not in a
