"""Running a multi-exit model over a dataset: early-exit inference (`run_inference`) and the all-exits pass
whose cached logits the replays use (`all_exit_logits`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.benchmark import timer
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


@dataclass
class InferenceResult:
    """`logits` `(N, C)` at each sample's exit, `exit_layers` `(N,)` 1-based, `layers_run` and `exit_checks` `(N,)`
    (encoder layers and exit heads each sample ran), `lengths` `(N,)` tokens per sample, `labels` `(N,)` or None,
    and `seconds` of model time (data loading excluded)."""

    logits: np.ndarray
    exit_layers: np.ndarray
    layers_run: np.ndarray
    exit_checks: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    seconds: float

    @property
    def avg_exit_layer(self) -> float:
        return float(self.exit_layers.mean())


def _batches(dataset, collator, batch_size: int, description: str | None):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    return tqdm(loader, desc=description, leave=False, disable=description is None)


def _pop_labels(batch: dict, labels: list) -> None:
    if "labels" in batch:
        labels.append(batch.pop("labels").numpy())


def run_inference(model, dataset, collator, batch_size: int = 32, description: str | None = None, **exit_kwargs) -> InferenceResult:
    """Runs `model` in eval mode over `dataset` with the given exit arguments (defaults: `model.exit_config`).

    Batches go to the model's device and the outputs stay there until the last batch is done, then come to the CPU
    together, so no per-batch copy stalls the device. `seconds` is model time: each call is timed with
    `torch.utils.benchmark.timer`, which synchronises the accelerator before it reads the clock (kernels run
    asynchronously; without it the clock would time their launch, and the input copy would land in the next call)."""
    model.eval()
    device = model.device
    outputs, lengths, labels, seconds = [], [], [], 0.0
    with torch.inference_mode():
        for batch in _batches(dataset, collator, batch_size, description):
            _pop_labels(batch, labels)
            lengths.append(batch["attention_mask"].sum(dim=1).numpy())
            batch = {key: value.to(device) for key, value in batch.items()}
            start = timer()
            out = model(**batch, **exit_kwargs)
            seconds += timer() - start
            outputs.append((out.logits, out.exit_layers, out.layers_run, out.exit_checks))
    logits, exit_layers, layers_run, exit_checks = (torch.cat(column).cpu() for column in zip(*outputs))
    return InferenceResult(
        logits=logits.float().numpy(),
        exit_layers=exit_layers.numpy(),
        layers_run=layers_run.numpy(),
        exit_checks=exit_checks.numpy(),
        lengths=np.concatenate(lengths),
        labels=np.concatenate(labels) if labels else None,
        seconds=seconds,
    )


def all_exit_logits(model, dataset, collator, batch_size: int = 32, description: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One full-depth pass computing every exit: `(N, E, C)` logits and the labels (or None). Skip gates stay off,
    as in early exit with any strategy but `skip`, so these are the logits those strategies see. Batches go to the
    model's device; the logits come to the CPU once, at the end, in float32."""
    model.eval()
    device = model.device
    logits, labels = [], []
    with torch.inference_mode():
        for batch in _batches(dataset, collator, batch_size, description):
            _pop_labels(batch, labels)
            out = model(**{key: value.to(device) for key, value in batch.items()}, output_all_exits=True, gate_mode="off")
            logits.append(torch.stack(out.all_logits, dim=1))
    return torch.cat(logits).float().cpu().numpy(), (np.concatenate(labels) if labels else None)
