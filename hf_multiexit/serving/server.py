"""`hf-multiexit serve`: an HTTP server (FastAPI + uvicorn) around a scheduler.

Requests take the shape of text-embeddings-inference and the Inference API:

    POST /predict  {"inputs": "text" | ["text", ...] | [["premise", "hypothesis"], ...],
                    "parameters": {ExitConfig fields, e.g. "exit_strategy": "patience", "patience": 2}}
    -> {"label": "POSITIVE", "score": 0.98, "exit_layer": 2}   (a list of them for a list of inputs)
    GET  /health   -> {"status": "ok", ...}
    GET  /metrics  -> Prometheus text: requests by status, latency histogram, exit-layer histogram, rows waiting per
                      depth.

A bad request is a 422 naming the bad value; a full queue a 503 with `Retry-After`; on shutdown (SIGINT/SIGTERM)
uvicorn stops accepting connections and waits for the requests in flight, which the scheduler finishes before it
stops. Optional extra: `pip install hf-multiexit[serve]`.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.core import GaugeMetricFamily
except ImportError as missing:  # the server's dependencies are an extra
    raise ImportError(f"hf-multiexit serve needs {missing.name}: pip install 'hf-multiexit[serve]'") from missing

from ..models.multiexit_bert import ExitConfig
from ..models.multiexit_bert.exit_strategies import MULTI_LABEL, REGRESSION, resolve_problem_type
from .scheduler import SCHEDULERS, Overloaded, Prediction, Scheduler, build_scheduler

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ServeArguments:
    """`hf-multiexit serve`: an HTTP server for a trained multi-exit model."""

    model: str = field(metadata={"help": "A trained multi-exit model folder, or an `hf-multiexit export` folder with --runtime onnx."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind (default loopback; 0.0.0.0 for all interfaces)."})
    port: int = field(default=8000, metadata={"help": "TCP port."})
    mode: str = field(default="continuous", metadata={
        "help": "continuous: layer-wise continuous batching (rows join and leave between layers); static: batches "
                "collected up to --max_batch_size or --max_wait_ms, run through the ordinary exit loop.",
        "choices": sorted(SCHEDULERS)})
    max_batch_tokens: int = field(default=4096, metadata={
        "help": "Most tokens (rows x longest row) one step runs; also how many tokens wait at depth 0 before new "
                "requests stay queued."})
    max_batch_size: int = field(default=32, metadata={"help": "Static mode: most rows in one batch."})
    max_wait_ms: float | None = field(default=None, metadata={
        "help": "Static mode: how long a batch waits to fill after its first request (default 10). Continuous mode: "
                "the age bound, after which the longest-waiting row's depth runs next (default 200)."})
    policy: str = field(default="largest", metadata={
        "help": "Continuous mode: which depth a step runs, deepest (finish requests first) or largest (fullest "
                "steps).", "choices": ["deepest", "largest"]})
    max_queue: int = field(default=1024, metadata={"help": "Requests queued or running beyond which the server answers 503."})
    num_threads: int | None = field(default=None, metadata={
        "help": "torch intra-op threads of the model (default: torch's, one per core). The HTTP event loop needs a "
                "core's share too: on a small machine one thread fewer than cores can serve more."})
    runtime: str = field(default="torch", metadata={"help": "torch, or onnx for an `hf-multiexit export` folder.",
                                                    "choices": ["torch", "onnx"]})
    ray: bool = field(default=False, metadata={
        "help": "Deploy with Ray Serve (extra [ray]) instead of one uvicorn process: replicas across a Ray cluster."})
    num_replicas: int = field(default=1, metadata={"help": "With --ray: Ray Serve replicas of the server."})

    def __post_init__(self):
        if self.mode not in SCHEDULERS:
            raise ValueError(f"--mode={self.mode!r} is not one of {sorted(SCHEDULERS)}.")
        if not 0 < self.port < 65536:
            raise ValueError(f"--port={self.port} is not a TCP port (1-65535).")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"--num_threads={self.num_threads} must be at least 1 (or left out for torch's default).")
        if self.num_replicas < 1:
            raise ValueError(f"--num_replicas={self.num_replicas} must be at least 1.")

    def scheduler_kwargs(self) -> dict[str, Any]:
        kwargs = {"max_batch_tokens": self.max_batch_tokens, "max_queue": self.max_queue}
        if self.mode == "static":
            kwargs["max_batch_size"] = self.max_batch_size
        else:
            kwargs["policy"] = self.policy
        if self.max_wait_ms is not None:
            kwargs["max_wait_ms"] = self.max_wait_ms
        return kwargs


def load_scheduler(args: ServeArguments) -> Scheduler:
    """The model, tokenizer and scheduler that `args` name."""
    from transformers import AutoTokenizer

    from ..evaluation.command import load_classifier, trained_model_config

    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    config = trained_model_config(args.model, "serve", "its answers would be noise")
    model = load_classifier(args.model, config, args.runtime)
    return build_scheduler(args.mode, model, AutoTokenizer.from_pretrained(args.model), **args.scheduler_kwargs())


def label_and_score(prediction: Prediction, config) -> dict[str, Any]:
    """What `pipeline("text-classification")` answers for the logits: softmax (single label) or sigmoid
    (multi-label) probability of the top class, or the value itself for regression."""
    logits = prediction.logits
    problem_type = resolve_problem_type(config)
    if problem_type == REGRESSION:
        index, score = 0, float(logits[0])
    else:
        scores = torch.sigmoid(logits) if problem_type == MULTI_LABEL else torch.softmax(logits, dim=-1)
        index = int(scores.argmax())
        score = float(scores[index])
    return {"label": config.id2label[index], "score": score, "exit_layer": prediction.exit_layer}


def parse_inputs(inputs: Any) -> tuple[list, bool]:
    """`(inputs as a list, whether the request sent a list)`; a clear `ValueError` for any other shape."""
    if isinstance(inputs, str):
        return [inputs], False
    if isinstance(inputs, list) and inputs:
        for item in inputs:
            if isinstance(item, str):
                continue
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(t, str) for t in item)):
                raise ValueError(f"inputs item {item!r} is neither a text nor a [text, text_pair] pair of two texts.")
        return inputs, True
    raise ValueError(f"inputs must be a text, a non-empty list of texts or a list of [text, text_pair] pairs; got {inputs!r}.")


def parse_parameters(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ValueError(f"parameters must be an object of exit arguments, got {parameters!r}.")
    unknown = sorted(set(parameters) - set(ExitConfig.field_names()))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; valid exit arguments are {ExitConfig.field_names()}.")
    return parameters


class Metrics:
    """The Prometheus series of one server, in a registry of its own (so several apps in a process do not clash)."""

    def __init__(self, scheduler: Scheduler):
        self.registry = CollectorRegistry()
        self.requests = Counter("hf_multiexit_requests", "HTTP prediction requests by status code.", ["status"],
                                registry=self.registry)
        self.latency = Histogram("hf_multiexit_request_latency_seconds", "Time from arrival to answer of /predict.",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        layers = scheduler.num_layers
        self.exit_layer = Histogram("hf_multiexit_exit_layer", "Layer each input left the model at.",
                                    buckets=[float(layer) for layer in range(1, layers + 1)], registry=self.registry)

        class QueueDepth:
            def collect(self):
                family = GaugeMetricFamily("hf_multiexit_queue_depth", "Rows waiting per stage (queued, or layers done).",
                                           labels=["stage"])
                for stage, count in scheduler.queue_depths().items():
                    family.add_metric([stage], count)
                yield family

        self.registry.register(QueueDepth())

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def create_app(scheduler: Scheduler):
    """The FastAPI app serving `scheduler`; closing the app (lifespan end) drains and stops the scheduler."""
    metrics = Metrics(scheduler)
    config = scheduler.config

    @asynccontextmanager
    async def lifespan(app):
        scheduler.start()
        yield
        await asyncio.to_thread(scheduler.close, True)

    app = FastAPI(title="hf-multiexit", lifespan=lifespan)

    def error(status: int, message: str, **headers) -> JSONResponse:
        metrics.requests.labels(status=str(status)).inc()
        return JSONResponse({"error": message}, status_code=status, headers=headers or None)

    @app.post("/predict")
    async def predict(request: Request):
        start = time.perf_counter()
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the body is not JSON; send {\"inputs\": ..., \"parameters\": {...}}.")
        if not isinstance(body, dict) or "inputs" not in body:
            return error(422, "the body must be a JSON object with \"inputs\" (and optional \"parameters\").")
        try:
            inputs, is_list = parse_inputs(body["inputs"])
            future = scheduler.submit(inputs, parse_parameters(body.get("parameters")))
        except Overloaded as overloaded:
            return error(503, str(overloaded), **{"Retry-After": "1"})
        except ValueError as bad:
            return error(422, str(bad))
        predictions = await asyncio.wrap_future(future)
        answers = [label_and_score(p, config) for p in predictions]
        for answer in answers:
            metrics.exit_layer.observe(answer["exit_layer"])
        metrics.latency.observe(time.perf_counter() - start)
        metrics.requests.labels(status="200").inc()
        return answers if is_list else answers[0]

    @app.get("/health")
    async def health():
        return {"status": "ok", "mode": scheduler.mode, "num_layers": scheduler.num_layers,
                "labels": [config.id2label[i] for i in range(config.num_labels)]}

    @app.get("/metrics")
    async def prometheus():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return app


def serve(args: ServeArguments) -> None:
    """Runs the server until SIGINT/SIGTERM (uvicorn's own handling, which drains requests in flight)."""
    if args.ray:
        from .ray_serve import serve_with_ray

        serve_with_ray(args)
        return
    import uvicorn

    uvicorn.run(create_app(load_scheduler(args)), host=args.host, port=args.port, log_level="info")
