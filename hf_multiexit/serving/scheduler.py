"""Request schedulers for serving a multi-exit model: layer-wise continuous batching, and static batching as the
baseline. No server dependency: `submit` returns a `concurrent.futures.Future`, so a web framework, Ray Serve or a
plain thread pool can drive them.

Continuous batching (`ContinuousScheduler`): every request's rows are embedded when they are admitted and wait at
depth 0; each step runs one segment (skip gate where the row's rule uses it, layer `d`, the exit check after it) over
the rows waiting at one depth `d`, with padding cut to the longest row of the step; rows that leave complete their
request at once, the others move to depth `d + 1`, and new requests are admitted at depth 0 as capacity frees. Each
row carries its own exit rule and strategy state (the patience counter), so requests with different exit arguments
share a step. The exit decisions are those of `early_exit_loop` (the same `ExitStrategy.should_exit` on the same
logits), which is why every request gets the prediction and exit layer of an offline `model(...)` call.

Static batching (`StaticScheduler`): collect up to `max_batch_size` rows (or `max_batch_tokens`), or wait
`max_wait_ms` after the first, then run the batch through the model's ordinary exit loop (one call per distinct exit
rule in the batch); every request of the batch answers when its call returns.

Both take the model classes of this package (PyTorch `MultiExitModelForSequenceClassification` or the ONNX Runtime
`ORTMultiExitModelForSequenceClassification`): the segments they run are the model's `ExitLoopSegments`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..models.multiexit_bert import ExitConfig, build_exit_strategy
from ..models.multiexit_bert.modeling_multiexit_bert import resolve_exit_config


class Overloaded(RuntimeError):
    """The scheduler's queue is full (or it is shutting down): the caller should answer 503 and retry later."""


@dataclass
class Prediction:
    """One input's result: the logits of the exit it left at (`(num_labels,)`, float32) and that exit's layer."""

    logits: torch.Tensor
    exit_layer: int


@dataclass
class _Request:
    rows: list[_Row]
    future: Future
    arrival: float
    results: list[Prediction | None] = field(default_factory=list)
    remaining: int = 0

    def finish_row(self, index: int, logits: torch.Tensor, exit_layer: int) -> None:
        self.results[index] = Prediction(logits.float(), exit_layer)
        self.remaining -= 1
        if self.remaining == 0 and not self.future.done():
            self.future.set_result(self.results)


@dataclass(eq=False)
class _Row:
    """One input of a request on its way through the layers."""

    request: _Request
    index: int  # position in the request's inputs
    input_ids: list[int]
    token_type_ids: list[int] | None
    exit_config: ExitConfig
    rule_key: str  # rows with equal keys share one `should_exit` call
    strategy: Any
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # the strategy's per-sample state, batch size 1
    hidden: torch.Tensor | None = None  # (length, hidden_size) after `depth` layers
    depth: int = 0
    since: float = 0.0  # when the row reached its depth (the age bound)

    @property
    def length(self) -> int:
        return len(self.input_ids)


def _pad(sequences: list[list[int]], value: int = 0) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    return torch.tensor([s + [value] * (width - len(s)) for s in sequences], dtype=torch.long)


def _stack(rows: list[_Row]) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The rows' hidden states padded to their longest, their mask, and whether any padding is in it."""
    lengths = [row.length for row in rows]
    width = max(lengths)
    hidden = torch.stack([F.pad(row.hidden, (0, 0, 0, width - row.length)) for row in rows])
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return hidden, mask, min(lengths) < width


class Scheduler:
    """Admission, the request queue and the worker thread that both modes share; `_work` is the mode's loop.

    `max_queue` bounds the requests waiting or running: `submit` beyond it raises `Overloaded` instead of growing
    without bound. `close(drain=True)` refuses new requests and lets the admitted ones finish."""

    mode: ClassVar[str]

    def __init__(self, model, tokenizer, *, max_batch_tokens: int = 4096, max_queue: int = 1024,
                 max_length: int | None = None):
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be a positive number of tokens, got {max_batch_tokens}.")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}.")
        self.model, self.tokenizer = model, tokenizer
        self.config = model.config
        self.segments = getattr(model, "base_model", model)  # the PyTorch classifier's `MultiExitModel`, or the ORT model
        self.num_layers = self.config.num_hidden_layers
        self.max_batch_tokens, self.max_queue = max_batch_tokens, max_queue
        limit = getattr(tokenizer, "model_max_length", None)
        self.max_length = max_length or (limit if limit and limit < 100_000 else 512)
        self._tokenizer_lock = threading.Lock()
        self._lock = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._in_flight = 0  # requests admitted and not finished
        self._closing = False
        self._worker: threading.Thread | None = None

    # ----- the caller's side -----
    def tokenize(self, inputs: list[str | tuple[str, str] | list[str]]) -> list[dict[str, list[int]]]:
        """Token ids of each input (a text or a `[text, text_pair]`), truncated to `max_length` as an offline
        `tokenizer(texts, truncation=True, max_length=...)` call makes them."""
        encoded = []
        with self._tokenizer_lock:  # a fast tokenizer's truncation settings are shared state between threads
            for item in inputs:
                pair = (item[0], item[1]) if isinstance(item, (list, tuple)) else (item, None)
                encoded.append(self.tokenizer(*pair, truncation=True, max_length=self.max_length))
        return encoded

    def submit(self, inputs: list, exit_kwargs: dict | None = None) -> Future:
        """Schedules `inputs` (texts or `[text, text_pair]` pairs) under the model's exit rule with `exit_kwargs`
        applied (`ExitConfig` fields, as `model(**batch, **exit_kwargs)` takes them). The future's result is one
        `Prediction` per input. Bad arguments raise `ValueError` here; a full queue raises `Overloaded`."""
        if not inputs:
            raise ValueError("inputs is empty: give at least one text.")
        exit_config = resolve_exit_config(self.model.exit_config, None, dict(exit_kwargs or {}))
        # Built here, so a bad rule fails in the caller's thread with its message; one per request, since a
        # strategy keeps no per-sample state of its own (that is each row's `state`).
        strategy = build_exit_strategy(exit_config, self.config)
        rule_key = exit_config.to_json_string()
        encoded = self.tokenize(inputs)
        request = _Request(rows=[], future=Future(), arrival=time.perf_counter(), results=[None] * len(inputs),
                           remaining=len(inputs))
        for index, tokens in enumerate(encoded):
            request.rows.append(_Row(
                request, index, list(tokens["input_ids"]), list(tokens["token_type_ids"]) if "token_type_ids" in tokens else None,
                exit_config, rule_key, strategy))
        with self._lock:
            if self._closing:
                raise Overloaded("the server is shutting down; retry against another replica.")
            if len(self._pending) + self._in_flight >= self.max_queue:
                raise Overloaded(f"{self.max_queue} requests are already queued or running (max_queue); retry later.")
            self._pending.append(request)
            self._lock.notify()
        self.start()
        return request.future

    def start(self) -> None:
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=f"hf-multiexit-{self.mode}", daemon=True)
                self._worker.start()

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stops admitting requests; with `drain`, waits until the admitted ones have their results."""
        with self._lock:
            self._closing = True
            if not drain:
                for request in self._pending:
                    request.future.set_exception(Overloaded("the scheduler was closed before this request ran."))
                self._pending.clear()
            self._lock.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)

    def queue_depths(self) -> dict[str, int]:
        """Rows waiting per stage: `"queued"` (not yet admitted) and each depth `0..L-1` (layers done)."""
        raise NotImplementedError

    # ----- the worker -----
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._lock:
                    while not self._pending and not self._busy() and not self._closing:
                        self._lock.wait()
                    if self._closing and not self._pending and not self._busy():
                        return
                try:
                    self._work()
                except Exception as error:  # a failing step must fail its requests, not hang them
                    self._fail_all(error)

    def _busy(self) -> bool:
        raise NotImplementedError

    def _work(self) -> None:
        raise NotImplementedError

    def _fail_all(self, error: Exception) -> None:
        raise NotImplementedError

    def _take_pending(self, max_rows: float, max_tokens: int) -> list[_Request]:
        """Pending requests, oldest first, while their rows number at most `max_rows` and hold at most `max_tokens`
        (rows x longest row); at least one."""
        taken, count, longest = [], 0, 0
        with self._lock:
            while self._pending:
                rows = self._pending[0].rows
                grown, widest = count + len(rows), max(longest, max(row.length for row in rows))
                if taken and (grown > max_rows or grown * widest > max_tokens):
                    break
                taken.append(self._pending.popleft())
                count, longest = grown, widest
            self._in_flight += len(taken)
        return taken

    def _finished(self, requests: int) -> None:
        with self._lock:
            self._in_flight -= requests

    def _tokens(self, rows: list[_Row]) -> int:
        return len(rows) * max(row.length for row in rows)


def _deepest(depths: list[list[_Row]]) -> int:
    return max(depth for depth, rows in enumerate(depths) if rows)


def _largest(depths: list[list[_Row]]) -> int:
    return max((depth for depth, rows in enumerate(depths) if rows), key=lambda depth: len(depths[depth]))


POLICIES = {"deepest": _deepest, "largest": _largest}
"""Which depth a step runs (before the age bound): `deepest` finishes the requests closest to done first, which frees
their capacity soonest; `largest` runs the depth with the most rows waiting, so steps are as full as they can be
(where a step has a fixed cost, as on CPUs, fewer and fuller steps serve more)."""


class ContinuousScheduler(Scheduler):
    """Layer-wise continuous batching. Each step runs the depth `policy` picks (see `POLICIES`), unless a row has
    waited more than `max_wait_ms` at its depth: then the depth of the row that has waited longest, so no depth
    starves. A step takes that depth's rows oldest first up to `max_batch_tokens` (rows x longest row), and new
    requests join depth 0 while the rows waiting there hold fewer than `max_batch_tokens` tokens.

    Defaults, and why: `largest`, because a step has a fixed cost besides its per-row one (on the 2-core CPU of
    `benchmarks/results/serving_load-sequential.md`, one MiniLM layer step costs 4.1 ms for 1 row and 2.5-3 ms per
    row from 4 rows on), and more so on GPUs, so fuller steps serve more. On that CPU the two policies could not be
    told apart (`benchmarks/results/serving_load.md`, interleaved: early leavers' p50 31 vs 40 ms at 20/s and 65 vs
    55 ms at 30/s, p99 0.40 vs 0.40 s and 0.70 vs 0.34 s). An age bound of 200 ms: a few full steps' time, so it
    rarely overrides the policy under normal load, yet it caps how long a depth can be passed over."""

    mode = "continuous"

    def __init__(self, model, tokenizer, *, max_wait_ms: float = 200.0, policy: str = "largest", **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        if max_wait_ms <= 0:
            raise ValueError(f"max_wait_ms must be positive, got {max_wait_ms}.")
        if policy not in POLICIES:
            raise ValueError(f"policy={policy!r} is not one of {sorted(POLICIES)}.")
        self.max_wait, self.policy = max_wait_ms / 1000, POLICIES[policy]
        self.depths: list[list[_Row]] = [[] for _ in range(self.num_layers)]
        self.exit_index = self.segments.exit_index

    def queue_depths(self) -> dict[str, int]:
        with self._lock:
            counts = {"queued": sum(len(r.rows) for r in self._pending)}
        counts.update({str(depth): len(rows) for depth, rows in enumerate(self.depths)})
        return counts

    def _busy(self) -> bool:
        return any(self.depths)

    def _fail_all(self, error: Exception) -> None:
        failed = {id(row.request): row.request for rows in self.depths for row in rows}
        for rows in self.depths:
            rows.clear()
        for request in failed.values():
            if not request.future.done():
                request.future.set_exception(error)
        self._finished(len(failed))

    def _work(self) -> None:
        self._admit()
        if any(self.depths):
            self._step(self._choose_depth())

    def _admit(self) -> None:
        waiting = self.depths[0]
        room = self.max_batch_tokens - (self._tokens(waiting) if waiting else 0)
        if room <= 0 or not self._pending:
            return
        requests = self._take_pending(float("inf"), room)
        rows = [row for request in requests for row in request.rows]
        input_ids = _pad([row.input_ids for row in rows])
        mask = _pad([[1] * row.length for row in rows])
        token_types = _pad([row.token_type_ids for row in rows]) if rows[0].token_type_ids is not None else None
        hidden = self.segments.embed(input_ids, mask, token_types)
        now = time.perf_counter()
        for i, row in enumerate(rows):
            row.hidden, row.since, row.state = hidden[i, : row.length], now, row.strategy.init_state(1, hidden.device)
        waiting.extend(rows)

    def _choose_depth(self) -> int:
        now = time.perf_counter()
        oldest = min((rows[0] for rows in self.depths if rows), key=lambda row: row.since)
        if now - oldest.since > self.max_wait:
            return oldest.depth
        return self.policy(self.depths)

    def _step(self, depth: int) -> None:
        waiting = self.depths[depth]
        count, longest = 1, waiting[0].length
        for row in waiting[1:]:
            widest = max(longest, row.length)
            if (count + 1) * widest > self.max_batch_tokens:
                break
            count, longest = count + 1, widest
        rows = waiting[:count]
        del waiting[:count]
        ran = self._run_layer(depth, rows)
        layer = depth + 1
        leaving: dict[_Row, torch.Tensor] = {}
        if layer == self.num_layers:
            # The final classifier answers for every row still running, including ones whose gate skipped it.
            leaving = dict(zip(rows, self._exit_logits(layer, rows)))
        elif layer in self.exit_index:
            checked = [row for row in ran if row.strategy.needs_logits(layer)]
            if checked:
                leaving = self._decide(layer, checked, self._exit_logits(layer, checked))
        now, done = time.perf_counter(), 0
        for row in rows:
            if row in leaving:
                row.hidden = row.state = None
                request = row.request
                request.finish_row(row.index, leaving[row], layer)
                done += request.remaining == 0
            else:
                row.depth, row.since = layer, now
                self.depths[layer].append(row)
        if done:
            self._finished(done)

    def _run_layer(self, index: int, rows: list[_Row]) -> list[_Row]:
        """Runs layer `index` for the rows that take it (all but those whose skip gate says skip) and returns them."""
        gated = [row for row in rows if row.strategy.uses_skip_gates]
        skipping = set()
        if gated:
            hidden, mask, padded = _stack(gated)
            gates = self.segments.gate(index, hidden, mask if padded else None).float()
            skipping = {row for row, g in zip(gated, gates.tolist()) if g >= row.strategy.gate_threshold}
        ran = [row for row in rows if row not in skipping]
        if ran:
            hidden, mask, padded = _stack(ran)
            context = self.segments.layer_context(hidden, mask if padded else None)
            hidden = self.segments.run_layer(index, hidden, context)
            for i, row in enumerate(ran):
                row.hidden = hidden[i, : row.length]
        return ran

    def _exit_logits(self, layer: int, rows: list[_Row]) -> torch.Tensor:
        hidden, mask, padded = _stack(rows)
        return self.segments.exit_logits(layer, hidden, mask if padded else None).float()

    def _decide(self, layer: int, rows: list[_Row], logits: torch.Tensor) -> dict[_Row, torch.Tensor]:
        """`should_exit` once per exit rule among `rows`, each rule on its rows' logits and stacked states."""
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row.rule_key, []).append(i)
        leaving = {}
        for members in groups.values():
            group = [rows[i] for i in members]
            state = {key: torch.cat([row.state[key] for row in group]) for key in group[0].state}
            decisions = group[0].strategy.should_exit(logits[members], layer, state)
            for j, (row, leaves) in enumerate(zip(group, decisions.tolist())):
                row.state = {key: value[j: j + 1] for key, value in state.items()}
                if leaves:
                    leaving[row] = logits[members[j]]
        return leaving


class StaticScheduler(Scheduler):
    """Static batching, the baseline: a batch is the pending requests up to `max_batch_size` rows and
    `max_batch_tokens` tokens, collected for at most `max_wait_ms` after the first arrives; it runs through the
    model's own early-exit loop (one call per distinct exit rule in it), and its requests answer when it is done."""

    mode = "static"

    def __init__(self, model, tokenizer, *, max_batch_size: int = 32, max_wait_ms: float = 10.0, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        if max_batch_size < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_wait_ms >= 0, got {max_batch_size} and {max_wait_ms}.")
        self.max_batch_size, self.max_wait = max_batch_size, max_wait_ms / 1000
        self._running: list[_Request] = []

    def queue_depths(self) -> dict[str, int]:
        with self._lock:
            return {"queued": sum(len(r.rows) for r in self._pending), "running": sum(len(r.rows) for r in self._running)}

    def _busy(self) -> bool:
        return False

    def _fail_all(self, error: Exception) -> None:
        for request in self._running:
            if not request.future.done():
                request.future.set_exception(error)
        self._finished(len(self._running))
        self._running = []

    def _work(self) -> None:
        deadline = time.perf_counter() + self.max_wait
        with self._lock:
            while not self._closing and sum(len(r.rows) for r in self._pending) < self.max_batch_size:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._lock.wait(left)
            if not self._pending:
                return
        self._running = self._take_pending(self.max_batch_size, self.max_batch_tokens)
        rows = [row for request in self._running for row in request.rows]
        groups: dict[str, list[_Row]] = {}
        for row in rows:
            groups.setdefault(row.rule_key, []).append(row)
        for group in groups.values():
            batch = {"input_ids": _pad([row.input_ids for row in group]), "attention_mask": _pad([[1] * row.length for row in group])}
            if group[0].token_type_ids is not None:
                batch["token_type_ids"] = _pad([row.token_type_ids for row in group])
            outputs = self.model(**batch, exit_config=group[0].exit_config)
            for row, logits, layer in zip(group, outputs.logits.float(), outputs.exit_layers.tolist()):
                row.request.finish_row(row.index, logits, layer)
        self._finished(len(self._running))
        self._running = []


SCHEDULERS: dict[str, type[Scheduler]] = {cls.mode: cls for cls in (ContinuousScheduler, StaticScheduler)}
"""`--mode` -> scheduler class."""


def build_scheduler(mode: str, model, tokenizer, **kwargs) -> Scheduler:
    """The scheduler for `mode` ("continuous" or "static") with its options."""
    if mode not in SCHEDULERS:
        raise ValueError(f"mode={mode!r} is not a scheduler; valid modes are {sorted(SCHEDULERS)}.")
    return SCHEDULERS[mode](model, tokenizer, **kwargs)
