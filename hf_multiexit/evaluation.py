"""Inference over a dataset with early exit: predictions, exit layers and wall-clock time."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm


@dataclass
class InferenceResult:
    """`logits` `(N, C)` at each sample's exit, `exit_layers` `(N,)` 1-based, `layers_run` `(N,)`, `labels` `(N,)`
    or None, and `seconds` of model time (data loading excluded)."""

    logits: np.ndarray
    exit_layers: np.ndarray
    layers_run: np.ndarray
    labels: np.ndarray | None
    seconds: float

    @property
    def avg_exit_layer(self) -> float:
        return float(self.exit_layers.mean())


def _batches(dataset, collator, batch_size: int, description: str | None):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    return tqdm(loader, desc=description, leave=False, disable=description is None)


def run_inference(model, dataset, collator, batch_size: int = 32, description: str | None = None, **exit_kwargs) -> InferenceResult:
    """Runs `model` in eval mode over `dataset` with the given exit arguments (defaults: `model.exit_config`)."""
    model.eval()
    logits, layers, run, labels, seconds = [], [], [], [], 0.0
    with torch.inference_mode():
        for batch in _batches(dataset, collator, batch_size, description):
            if "labels" in batch:
                labels.append(batch.pop("labels").numpy())
            start = time.perf_counter()
            out = model(**batch, **exit_kwargs)
            seconds += time.perf_counter() - start
            logits.append(out.logits.float().numpy())
            layers.append(out.exit_layers.numpy())
            run.append(out.layers_run.numpy())
    return InferenceResult(
        logits=np.concatenate(logits),
        exit_layers=np.concatenate(layers),
        layers_run=np.concatenate(run),
        labels=np.concatenate(labels) if labels else None,
        seconds=seconds,
    )


def all_exit_logits(model, dataset, collator, batch_size: int = 32, description: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One full-depth pass computing every exit: `(N, E, C)` logits and the labels (or None)."""
    model.eval()
    logits, labels = [], []
    with torch.inference_mode():
        for batch in _batches(dataset, collator, batch_size, description):
            if "labels" in batch:
                labels.append(batch.pop("labels").numpy())
            out = model(**batch, output_all_exits=True)
            logits.append(torch.stack(out.all_logits, dim=1).float().numpy())
    return np.concatenate(logits), (np.concatenate(labels) if labels else None)
