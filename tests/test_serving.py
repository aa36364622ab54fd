"""Serving (`hf_multiexit.serving`): the schedulers against offline `model(...)` calls, and the HTTP server on
loopback (exactness under concurrent load, bad requests, overload, metrics, draining on shutdown). Tiny random
configs; the thresholds sit between observed values so that no float rounding of another batch composition can
move a sample across them."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
import uvicorn
from test_modeling import between_values, tiny_model
from test_onnx import WORDS, save_with_tokenizer
from transformers import AutoTokenizer

from hf_multiexit.cli import main
from hf_multiexit.models.multiexit_bert.exit_strategies import entropy
from hf_multiexit.serving import ContinuousScheduler, Overloaded, Prediction, StaticScheduler, build_scheduler
from hf_multiexit.serving.server import ServeArguments, create_app, label_and_score

TOL = 1e-4


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) for _ in range(count)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return serving_setup(tmp_path_factory.mktemp("serve"))


def serving_setup(root):
    """A tiny 4-layer model saved in `root` with its tokenizer, and exit arguments whose thresholds fall between
    values: `(model, tokenizer, folder, rules)`."""
    model = tiny_model()
    folder = save_with_tokenizer(model, root / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = sentences(64)
    with torch.no_grad():
        all_logits = model(**tokenizer(texts, padding=True, return_tensors="pt"), output_all_exits=True).all_logits
    probabilities = torch.stack([z.softmax(-1).max(-1).values for z in all_logits[:-1]])
    rules = [
        {},
        {"exit_strategy": "entropy", "entropy_threshold": between_values(torch.stack([entropy(z) for z in all_logits[:-1]]))},
        {"exit_strategy": "confidence", "confidence_threshold": between_values(probabilities)},
        {"exit_strategy": "patience", "patience": 1},
        {"exit_strategy": "patience", "patience": 2, "min_exit_layer": 3},
        {"exit_strategy": "static", "exit_layer": 2},
        {"exit_strategy": "none"},
    ]
    return model, tokenizer, folder, rules


def offline(model, tokenizer, text, rule) -> dict:
    """What one `model(...)` call on the input alone answers."""
    pair = tuple(text) if isinstance(text, list) else (text,)
    with torch.no_grad():
        out = model(**tokenizer(*pair, truncation=True, return_tensors="pt"), **rule)
    return {"logits": out.logits[0].float(), "exit_layer": int(out.exit_layers[0])}


def assert_matches(model, tokenizer, cases, predictions) -> None:
    for (text, rule), prediction in zip(cases, predictions):
        expected = offline(model, tokenizer, text, rule)
        assert prediction.exit_layer == expected["exit_layer"], (text, rule)
        assert torch.allclose(prediction.logits, expected["logits"], atol=TOL), (text, rule)


@pytest.mark.parametrize("mode", ["continuous", "static"])
def test_scheduler_answers_each_request_as_an_offline_call(served, mode):
    """Requests submitted from several threads at once, each with its own rule, mixed lengths and pairs, share
    steps; each gets the offline call's exit layer and logits."""
    model, tokenizer, _, rules = served
    texts = sentences(120, seed=1) + [[a, b] for a, b in zip(sentences(8, seed=2), sentences(8, seed=3))]
    cases = [(text, rules[i % len(rules)]) for i, text in enumerate(texts)]
    scheduler = build_scheduler(mode, model, tokenizer, max_batch_tokens=96)
    with ThreadPoolExecutor(8) as pool:
        futures = list(pool.map(lambda case: scheduler.submit([case[0]], case[1]), cases))
    predictions = [future.result(timeout=60)[0] for future in futures]
    scheduler.close()
    assert_matches(model, tokenizer, cases, predictions)
    layers = {p.exit_layer for p in predictions}
    assert len(layers) > 1, "the rules should make samples leave at different layers"


def test_continuous_scheduler_with_skip_gates_matches_offline(tmp_path):
    """SmartBERT's skip rule beside a rule without gates in the same steps: rows whose gate skips a layer move on
    without it and are not checked there, as in the offline loop."""
    model = tiny_model(use_skip_gates=True)
    tokenizer = AutoTokenizer.from_pretrained(save_with_tokenizer(model, tmp_path / "model"))
    texts = sentences(40, seed=4)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():  # biased so that some rows skip some layers and others do not
        for gate in model.bert.skip_gates:
            gates = gate(model.bert.embeddings(batch["input_ids"]), batch["attention_mask"])
            gate.score.bias -= torch.logit(torch.tensor(between_values(gates)))
    rules = [{"exit_strategy": "skip", "entropy_threshold": 0.0}, {"exit_strategy": "patience", "patience": 1}]
    cases = [(text, rules[i % 2]) for i, text in enumerate(texts)]
    scheduler = ContinuousScheduler(model, tokenizer, max_batch_tokens=64)
    futures = [scheduler.submit([text], rule) for text, rule in cases]
    predictions = [future.result(timeout=60)[0] for future in futures]
    scheduler.close()
    assert_matches(model, tokenizer, cases, predictions)
    with torch.no_grad():
        skipped = model(**batch, exit_strategy="skip", entropy_threshold=0.0).layers_run
    assert (skipped < 4).any() and (skipped > 0).any()


def test_scheduler_refuses_bad_arguments_and_overload(served):
    model, tokenizer, _, _ = served
    scheduler = ContinuousScheduler(model, tokenizer, max_queue=2)
    with pytest.raises(ValueError, match="patience"):
        scheduler.submit(["a film"], {"exit_strategy": "patience", "patience": -1})
    with pytest.raises(ValueError, match="not_a_strategy"):
        scheduler.submit(["a film"], {"exit_strategy": "not_a_strategy"})
    with pytest.raises(ValueError, match="empty"):
        scheduler.submit([], {})
    release = threading.Event()
    work = scheduler._work
    scheduler._work = lambda: (release.wait(30), work())  # hold the worker so the queue fills
    first = [scheduler.submit(["a good film"]), scheduler.submit(["a dull plot"])]
    with pytest.raises(Overloaded, match="max_queue"):
        scheduler.submit(["one too many"])
    release.set()
    assert all(len(f.result(timeout=30)) == 1 for f in first)
    scheduler.close()
    with pytest.raises(Overloaded, match="shutting down"):
        scheduler.submit(["too late"])
    for bad in ({"max_batch_tokens": 0}, {"max_queue": 0}, {"max_wait_ms": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ContinuousScheduler(model, tokenizer, **bad)
    with pytest.raises(ValueError, match="max_batch_size"):
        StaticScheduler(model, tokenizer, max_batch_size=0)
    with pytest.raises(ValueError, match="continuous"):
        build_scheduler("layerwise", model, tokenizer)


class LiveServer:
    """`create_app(scheduler)` under uvicorn on a free loopback port, in a thread."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        config = uvicorn.Config(create_app(scheduler), host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            self.thread.join(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


def fire(url: str, bodies: list[dict], clients: int = 32) -> list[tuple[int, object]]:
    """POSTs `bodies` to /predict from `clients` threads at once (a keep-alive connection each; the standard
    library's client, whose per-request cost is a fraction of a millisecond, so the server is what is measured)."""
    host, port = url.removeprefix("http://").split(":")
    local = threading.local()

    def post(body):
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(host, int(port), timeout=60)
        local.connection.request("POST", "/predict", json.dumps(body), {"content-type": "application/json"})
        response = local.connection.getresponse()
        return response.status, json.loads(response.read())

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(post, bodies))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["continuous", "static"])
def test_server_under_concurrent_load_answers_like_offline_calls(served, mode):
    """A few hundred concurrent requests on loopback, mixed lengths, single texts, lists and pairs, each with its own
    exit arguments: every answer's label, score and exit layer are the offline call's; /metrics counts them."""
    model, tokenizer, _, rules = served
    texts = sentences(300, seed=5)
    bodies, expected = [], []
    for i, text in enumerate(texts):
        rule = rules[i % len(rules)]
        inputs = text if i % 5 else [text, texts[i - 1]] if i % 10 else [[text, texts[i - 1]]]
        bodies.append({"inputs": inputs, "parameters": rule})
        items = inputs if isinstance(inputs, list) else [inputs]
        answers = []
        for item in items:
            reference = offline(model, tokenizer, item, rule)
            answers.append(label_and_score(Prediction(**reference), model.config))
        expected.append(answers if isinstance(inputs, list) else answers[0])
    with LiveServer(build_scheduler(mode, model, tokenizer, max_batch_tokens=128)) as url:
        responses = fire(url, bodies)
        metrics = httpx.get(f"{url}/metrics").text
        health = httpx.get(f"{url}/health").json()
    assert [status for status, _ in responses] == [200] * len(bodies), responses[0]
    for (_, got), want in zip(responses, expected):
        for g, w in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
            assert (g["label"], g["exit_layer"]) == (w["label"], w["exit_layer"])
            assert abs(g["score"] - w["score"]) <= TOL
    assert f'hf_multiexit_requests_total{{status="200"}} {len(bodies)}.0' in metrics
    assert "hf_multiexit_request_latency_seconds_bucket" in metrics
    assert 'hf_multiexit_exit_layer_bucket{le="1.0"}' in metrics
    assert 'hf_multiexit_queue_depth{stage="queued"} 0.0' in metrics
    assert health["status"] == "ok" and health["mode"] == mode and health["num_layers"] == 4


def test_server_refuses_bad_requests_with_clear_messages(served):
    model, tokenizer, _, _ = served
    scheduler = ContinuousScheduler(model, tokenizer, max_queue=1)
    with LiveServer(scheduler) as url:
        cases = [
            (b"not json", 400, "not JSON"),
            (b'{"text": "a film"}', 422, "inputs"),
            (b'{"inputs": []}', 422, "non-empty"),
            (b'{"inputs": [["a", "b", "c"]]}', 422, "pair"),
            (b'{"inputs": "a film", "parameters": {"patience_steps": 2}}', 422, "patience_steps"),
            (b'{"inputs": "a film", "parameters": {"exit_strategy": "patience", "patience": -1}}', 422, "patience"),
            (b'{"inputs": "a film", "parameters": {"exit_strategy": "skip"}}', 422, "skip gates"),
        ]
        for body, status, words in cases:
            response = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"})
            assert response.status_code == status, body
            assert words in response.json()["error"], response.json()
        release = threading.Event()
        work = scheduler._work
        scheduler._work = lambda: (release.wait(30), work())

        async def overload():
            async with httpx.AsyncClient(timeout=60) as client:
                held = asyncio.ensure_future(client.post(f"{url}/predict", json={"inputs": "a film"}))
                await asyncio.sleep(0.2)
                refused = await client.post(f"{url}/predict", json={"inputs": "a dull film"})
                release.set()
                return await held, refused

        held, refused = asyncio.run(overload())
        assert held.status_code == 200
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "max_queue" in refused.json()["error"]


def test_shutdown_drains_requests_in_flight(served):
    model, tokenizer, _, _ = served
    scheduler = ContinuousScheduler(model, tokenizer)
    release = threading.Event()
    work = scheduler._work
    scheduler._work = lambda: (release.wait(30), work())
    live = LiveServer(scheduler)
    url = live.__enter__()

    async def in_flight():
        async with httpx.AsyncClient(timeout=60) as client:
            pending = [asyncio.ensure_future(client.post(f"{url}/predict", json={"inputs": text})) for text in sentences(20)]
            await asyncio.sleep(0.3)
            live.server.should_exit = True  # what SIGTERM does
            await asyncio.sleep(0.2)
            release.set()
            return await asyncio.gather(*pending)

    responses = asyncio.run(in_flight())
    live.thread.join(30)
    assert [r.status_code for r in responses] == [200] * 20
    assert not live.thread.is_alive()
    with pytest.raises(Overloaded):
        scheduler.submit(["after shutdown"])


def test_serve_command_refuses_bad_flags(served, capsys):
    _, _, folder, _ = served
    with pytest.raises(ValueError, match="--mode='layerwise'"):
        ServeArguments(model=folder, mode="layerwise")
    with pytest.raises(ValueError, match="--port=70000"):
        ServeArguments(model=folder, port=70000)
    with pytest.raises(SystemExit):
        main(["serve", "--model", folder, "--mode", "layerwise"])
    assert "layerwise" in capsys.readouterr().err

