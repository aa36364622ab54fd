"""Replaying exit rules on cached logits: every strategy's decisions from one all-exits pass (`simulate_exits`),
the oracle bound and the default sweep grids, with no further encoder runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..models.multiexit_bert import EXIT_STRATEGIES, ExitConfig
from ..models.multiexit_bert.exit_strategies import SINGLE_LABEL, build_exit_strategy


@dataclass
class SimulatedExits:
    """What early exit would do on cached logits: `exit_layers` `(N,)`, `logits` `(N, C)` at the exit, and
    `exit_checks` `(N,)` (exit heads the strategy evaluates for each sample)."""

    exit_layers: np.ndarray
    logits: np.ndarray
    exit_checks: np.ndarray


def simulate_exits(all_logits: np.ndarray, model_config, exit_config: ExitConfig | None = None, **exit_kwargs) -> SimulatedExits:
    """Replays an exit strategy on cached all-exit logits `(N, E, C)`, exit by exit, with the strategy's own
    `needs_logits`/`should_exit` and per-sample state, exactly as the early-exit forward applies it, so the exits
    equal a real run's up to float rounding of the logits. Strategies that use skip gates change the hidden states
    themselves and cannot be replayed (`ValueError`)."""
    base = exit_config or ExitConfig()
    config = base.update(**exit_kwargs) if exit_kwargs else base
    strategy = build_exit_strategy(config, model_config)
    if strategy.uses_skip_gates:
        raise ValueError(
            f"exit_strategy={strategy.name!r} skips layers, which changes the hidden states: it cannot be replayed on "
            f"cached logits; measure it with run_inference. Replayable: "
            f"{[name for name, cls in EXIT_STRATEGIES.items() if not cls.uses_skip_gates]}."
        )
    logits = torch.as_tensor(all_logits)
    count, exit_layers = logits.shape[0], list(model_config.exit_layers)
    exit_index = torch.full((count,), len(exit_layers) - 1, dtype=torch.long)
    checks = torch.zeros(count, dtype=torch.long)
    active = torch.arange(count)
    state = strategy.init_state(count, logits.device)
    for index, layer in enumerate(exit_layers[:-1]):
        if not active.numel():
            break
        if not strategy.needs_logits(layer):
            continue
        checks[active] += 1
        leaving = strategy.should_exit(logits[active, index], layer, state)
        exit_index[active[leaving]] = index
        staying = ~leaving
        active = active[staying]
        state = {key: value[staying] for key, value in state.items()}
    checks[active] += 1  # the final classifier answers for everyone still running
    chosen = logits[torch.arange(count), exit_index]
    layers = torch.tensor(exit_layers)[exit_index]
    return SimulatedExits(exit_layers=layers.numpy(), logits=chosen.numpy(), exit_checks=checks.numpy())


def oracle_exits(all_logits: np.ndarray, labels: np.ndarray | None, exit_layers: Sequence[int], problem_type: str) -> dict | None:
    """The oracle bound of an exit rule for this model (single-label classification): each sample leaves at the
    first exit whose prediction equals the final exit's (`agree_final`: same predictions as full depth, fewest
    layers) or at the first exit that is correct (`first_correct`, the final exit if none is). Returns
    `{name: {avg_exit_layer, layer_speedup, accuracy}}`, or None for other problem types."""
    if problem_type != SINGLE_LABEL:
        return None
    predictions = all_logits.argmax(axis=-1)
    layers = np.asarray(exit_layers)
    num_layers = int(layers[-1])
    rules = {"agree_final": predictions == predictions[:, -1:]}
    if labels is not None:
        correct = predictions == labels[:, None]
        correct[:, -1] |= ~correct.any(axis=1)
        rules["first_correct"] = correct
    result = {}
    for name, mask in rules.items():
        index = mask.argmax(axis=1)  # the first True; every row has one (the final exit's column)
        avg = float(layers[index].mean())
        entry = {"avg_exit_layer": avg, "layer_speedup": num_layers / avg}
        if labels is not None:
            entry["accuracy"] = float((predictions[np.arange(len(index)), index] == labels).mean())
        result[name] = entry
    return result


def sweep_parameter(strategy: str) -> str | None:
    """The `ExitConfig` field a sweep of `strategy` varies: the strategy's first parameter (None for `none`)."""
    try:
        parameters = EXIT_STRATEGIES[strategy].parameters
    except KeyError:
        raise ValueError(f"Unknown exit_strategy={strategy!r}; valid strategies are {list(EXIT_STRATEGIES)}.") from None
    return parameters[0] if parameters else None


DEFAULT_GRID_STEP = 0.25
"""Largest layer speed-up step between consecutive default thresholds of a sweep: about 20 points from full depth to
6x on a 6-layer model, each timed by real runs when `wall_clock`."""


def default_sweep_values(strategy: str, model_config, all_logits: np.ndarray, max_step: float = DEFAULT_GRID_STEP) -> list:
    """A sweep grid that spans a strategy's range on this model and data: every exit layer (static), patience
    0..E-1, and for entropy, confidence and skip's entropy threshold the quantile grid of
    `calibration.candidate_values` on the exit scores of `all_logits` `(N, E, C)`: thresholds placed on the data
    so that consecutive points differ in layer speed-up by at most `max_step` (where ties allow), from full depth
    to every sample at its first exit. (A fixed grid such as 12 linear entropies up to ln C crowds its points where
    this model's entropies are not: one 4-class task jumped from about 2x to 6x in one step.) Skip's grid uses the
    entropies without gates, so its points' speed-ups are only roughly spaced."""
    from ..calibration import candidate_values  # calibration replays strategies with this module's simulate_exits

    parameter = sweep_parameter(strategy)
    if parameter is None:
        return [None]
    if parameter == "exit_layer":
        return list(model_config.exit_layers)
    if parameter == "patience":
        return list(range(len(model_config.exit_layers)))
    if parameter == "entropy_threshold":
        return candidate_values(all_logits, model_config, "entropy", max_step)
    if parameter == "confidence_threshold":
        return candidate_values(all_logits, model_config, "confidence", max_step)
    raise ValueError(f"No default sweep for exit_strategy={strategy!r} ({parameter}); pass the values.")
