"""Serving under load: layer-wise continuous batching against static batching, same model, same exit rule.

What it measures
----------------
Three servers on loopback (`hf-multiexit serve`, each its own process, started first and idle while another is
loaded): `--mode continuous` (its default policy, `largest`), the same with `--policy deepest`, and `--mode static`.
At each rate of ``--rates``, each variant in turn (the order rotated per rate) gets open-loop Poisson arrivals of
SST-2 dev sentences (file order, one sentence per request, the model's saved exit rule) for ``--seconds`` or
``--max_requests``, whichever ends first; a request is sent at its arrival time whether or not earlier ones have
answered. Per rate and variant: achieved throughput (answers per second over the span from the first arrival to the
last answer), p50/p99 latency, the p50 of requests that left at layer 1-2, and 503s. A variant *sustains* a rate when
every request is answered with 200, throughput is at least 95% of the arrival rate that the Poisson draw realised
(requests over the last arrival time), and p99 latency is at most ``--p99_bound`` (default 0.5 s, an interactive
budget for one classification call).

Also the per-step costs that explain the result: one layer of the model on B rows of SST-2 length (B = 1, 4, 16,
32, 64), timed in this process (`benchmarks/harness.py`), as milliseconds per step and per row.

Targets (issue 22): continuous sustains >= 1.5x the highest rate static sustains (same p99 bound), and at that rate
the p50 latency of requests leaving at layer 1-2 is under half of static's.

The client (threads of the standard library's HTTP client) shares the machine's cores with the server: its
per-request cost is part of every figure, for every variant alike.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serving_load.py --model runs/run_all/sst2-deebert
        [--rates 20,30,40,...] [--seconds 20] [--max_requests 2000] [--p99_bound 0.5] [--glue_dir DIR]

Results: ``benchmarks/results/serving_load.{json,md}``. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import torch
from harness import ROOT, environment, interleaved_times, machine_share, write_results
from transformers import AutoConfig, AutoTokenizer

from hf_multiexit.models.multiexit_bert import AUTO_FAMILIES

DEFAULT_GLUE_DIR = Path(os.environ.get("GLUE_DIR", ROOT.parent / "shared" / "data" / "glue"))
VARIANTS = {  # name -> `hf-multiexit serve` flags; "continuous" and "static" are the ones the targets compare
    "continuous": ["--mode", "continuous"],
    "continuous, policy deepest": ["--mode", "continuous", "--policy", "deepest"],
    "static": ["--mode", "static"],
}
EARLY = 2  # "early leavers": requests that exit at layer 1 or 2
CLIENT_THREADS = 256
KEEP_ALIVE = 4.0  # seconds a client thread reuses its connection; uvicorn closes idle ones after 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, flags: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-c", "import sys; from hf_multiexit.cli import main; sys.exit(main())",
               "serve", "--model", model, "--port", str(port), *flags]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {' '.join(command)}")
    process.kill()
    raise RuntimeError(f"the server did not answer /health within 120 s: {' '.join(command)}")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def open_loop(url: str, texts: list[str], rate: float, seconds: float, max_requests: int, seed: int) -> dict:
    """Poisson arrivals at `rate`, each request sent at its arrival time by one of `CLIENT_THREADS` threads
    (standard-library HTTP client, a keep-alive connection per thread: a fraction of a millisecond per request, where
    an asyncio client with a shared pool cost ~20 ms). Latency counts from the arrival time, so a request that waited
    for a free client thread is charged for it."""
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    while len(arrivals) < max_requests:
        t += rng.expovariate(rate)
        if t > seconds:
            break
        arrivals.append(t)
    host, port = url.removeprefix("http://").split(":")
    local = threading.local()
    start = time.perf_counter() + 0.1

    def one(i: int) -> tuple:
        at = arrivals[i]
        time.sleep(max(0.0, start + at - time.perf_counter()))
        if getattr(local, "last", -KEEP_ALIVE) < time.perf_counter() - KEEP_ALIVE:  # uvicorn closes idle ones
            local.connection = http.client.HTTPConnection(host, int(port), timeout=300)
        local.connection.request("POST", "/predict", json.dumps({"inputs": texts[i % len(texts)]}),
                                 {"content-type": "application/json"})
        response = local.connection.getresponse()
        body = json.loads(response.read())
        local.last = time.perf_counter()
        done = local.last - start
        return at, done, done - at, response.status, body.get("exit_layer")

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        records = list(pool.map(one, range(len(arrivals))))
    return summarize(records, rate)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summarize(records: list[tuple], rate: float) -> dict:
    ok = [r for r in records if r[3] == 200]
    span = max(r[1] for r in records) - min(r[0] for r in records)
    latencies = [r[2] for r in ok]
    early = [r[2] for r in ok if r[4] <= EARLY]
    return {
        "offered_rate": rate, "arrival_rate": len(records) / max(r[0] for r in records), "requests": len(records), "ok": len(ok), "rejected_503": sum(r[3] == 503 for r in records),
        "throughput": len(ok) / span, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
        "early_leavers": len(early), "early_p50": percentile(early, 0.5),
        "avg_exit_layer": statistics.fmean(r[4] for r in ok) if ok else float("nan"),
    }


def sustains(point: dict, bound: float) -> bool:
    return point["ok"] == point["requests"] and point["throughput"] >= 0.95 * point["arrival_rate"] and point["p99"] <= bound


def saturated(point: dict, bound: float) -> bool:
    return point["p99"] > 4 * bound and point["throughput"] < 0.8 * point["arrival_rate"]


def step_costs(model_path: str, texts: list[str], rounds: int = 5) -> dict:
    """Milliseconds of one layer step on B rows of SST-2 sentences (padded to the longest of them)."""
    config = AutoConfig.from_pretrained(model_path)
    model = AUTO_FAMILIES[type(config)][1].from_pretrained(model_path, config=config).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    segments = model.base_model
    costs = {}
    with torch.inference_mode():
        for rows in (1, 4, 16, 32, 64):
            batch = tokenizer(texts[:rows], padding=True, return_tensors="pt")
            hidden = segments.embed(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            context = segments.layer_context(hidden, batch["attention_mask"])
            step = lambda: segments.run_layer(0, hidden, context)  # noqa: E731
            step()
            seconds = statistics.median(interleaved_times({"step": step}, rounds)["step"])
            costs[rows] = {"ms_per_step": 1000 * seconds, "ms_per_row": 1000 * seconds / rows,
                           "tokens": int(batch["attention_mask"].numel())}
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--rates", default="20,30,40,45,50,55,60")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max_requests", type=int, default=2000)
    parser.add_argument("--p99_bound", type=float, default=0.5)
    parser.add_argument("--glue_dir", type=Path, default=DEFAULT_GLUE_DIR)
    parser.add_argument("--server_args", default="", help="extra `hf-multiexit serve` flags for every variant")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "serving_load"))
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with open(args.glue_dir / "SST-2" / "dev.tsv", encoding="utf-8") as f:
        texts = [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    env = environment()

    # All servers start first and wait idle (a waiting server costs no CPU); each rate then runs every variant, in an
    # order rotated per rate, so a drift in the machine's speed (one run saw a layer step take 50% longer than an
    # hour before) hits all variants alike instead of whichever ran last.
    servers = {}
    try:
        for name, flags in VARIANTS.items():
            servers[name] = start_server(args.model, flags + args.server_args.split())
            open_loop(servers[name][1], texts, 20.0, 2.0, 40, seed=0)  # warm-up, untimed
        results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        with machine_share() as share:
            for i, rate in enumerate(rates):
                names = list(VARIANTS)
                for name in names[i % len(names):] + names[: i % len(names)]:
                    if results[name] and saturated(results[name][-1], args.p99_bound):
                        continue  # past saturation: higher rates only queue longer
                    point = open_loop(servers[name][1], texts, rate, args.seconds, args.max_requests, seed=i + 1)
                    results[name].append(point)
                    print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in point.items()}, flush=True)
    finally:
        for process, _ in servers.values():
            stop_server(process)
    costs = step_costs(args.model, texts)

    best = {name: max((p["offered_rate"] for p in points if sustains(p, args.p99_bound)), default=0.0)
            for name, points in results.items()}
    at_static = {name: next((p for p in results[name] if p["offered_rate"] == best["static"]), None) for name in results}
    early_ratio = (at_static["continuous"]["early_p50"] / at_static["static"]["early_p50"]
                   if at_static["continuous"] and at_static["static"] else float("nan"))
    rate_ratio = best["continuous"] / best["static"] if best["static"] else float("nan")
    targets = [
        {"name": "highest sustained rate, continuous / static", "value": rate_ratio, "target": ">= 1.5",
         "pass": rate_ratio >= 1.5},
        {"name": f"p50 latency of layer 1-{EARLY} leavers at static's highest sustained rate, continuous / static",
         "value": early_ratio, "target": "< 0.5", "pass": early_ratio < 0.5},
    ]
    report = {"model": args.model, "p99_bound": args.p99_bound, "seconds": args.seconds, "max_requests": args.max_requests,
              "results": results, "highest_sustained_rate": best, "step_costs": costs, "cpu_share_while_loading": share,
              "targets": targets}
    write_results(args.output, report, markdown(report, env))


def markdown(report: dict, env: dict) -> list[str]:
    lines = [
        "# Serving under load: layer-wise continuous batching vs static batching", "",
        f"Model `{report['model']}` with its saved exit rule; {env['cpu_model']} ({env['cpu_count']} CPUs), torch "
        f"{env['torch']}. Open-loop Poisson arrivals of SST-2 dev sentences, {report['seconds']:.0f} s or "
        f"{report['max_requests']} requests per rate; the client runs on the same cores. Sustained: every request "
        f"answered, throughput >= 95% of the realised arrival rate, p99 <= {report['p99_bound']} s.", "",
        "| variant | offered /s | throughput /s | p50 ms | p99 ms | p50 ms of layer 1-2 leavers | avg exit layer | 503 | sustained |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, points in report["results"].items():
        for p in points:
            lines.append(
                f"| {name} | {p['offered_rate']:.0f} | {p['throughput']:.1f} | {1000 * p['p50']:.1f} | {1000 * p['p99']:.1f} | "
                f"{1000 * p['early_p50']:.1f} ({p['early_leavers']}) | {p['avg_exit_layer']:.2f} | {p['rejected_503']} | "
                f"{'yes' if sustains(p, report['p99_bound']) else 'no'} |")
    lines += ["", "Highest sustained rate: " + ", ".join(f"{name} {r:.0f}/s" for name, r in report["highest_sustained_rate"].items()), "",
              "## Per-step cost (one layer, this process)", "", "| rows | tokens (padded) | ms per step | ms per row |",
              "|---:|---:|---:|---:|",
              *[f"| {rows} | {c['tokens']} | {c['ms_per_step']:.2f} | {c['ms_per_row']:.3f} |" for rows, c in report["step_costs"].items()],
              "", "## Targets", "", "| target | value | required | result |", "|---|---:|---|---|",
              *[f"| {t['name']} | {t['value']:.3f} | {t['target']} | {'PASS' if t['pass'] else 'FAIL'} |" for t in report["targets"]]]
    share = report["cpu_share_while_loading"]
    lines.append(f"\nProcesses other than the client (the servers among them) took "
                 f"{share.get('other_processes_cpu_fraction', float('nan')):.1%} of the CPUs while loading.")
    return lines


if __name__ == "__main__":
    main()
