# Copyright 2026 The hf-multiexit authors. Licensed under the Apache License, Version 2.0.
"""`ExitConfig`: the early-exit defaults saved beside a checkpoint, modelled on `transformers.GenerationConfig`.

This file travels to the Hub with saved checkpoints: it may import only torch, transformers and sibling files.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
from dataclasses import dataclass, fields
from typing import Any

EXIT_CONFIG_NAME = "exit_config.json"
EXIT_CONFIG_FORMAT_VERSION = 1


@dataclass
class ExitConfig:
    r"""How a multi-exit model decides, at inference, where each sample leaves.

    Like `GenerationConfig`, an instance is stored on the model (`model.exit_config`), saved as
    `exit_config.json` beside `config.json`, and every field can be overridden per call:
    `model(**batch, exit_strategy="patience", patience=2)`.

    Args:
        exit_strategy: one of the registered strategies (`"none"`, `"static"`, `"entropy"`, `"confidence"`,
            `"patience"`, `"skip"`; see `exit_strategies.EXIT_STRATEGIES`).
        exit_layer: `static`: the 1-based layer every sample leaves at.
        entropy_threshold: `entropy`/`skip`: leave at the first exit with `H(p) < S`, `H = -sum p ln p`
            (DeeBERT, Xin et al. 2020).
        normalize_entropy: divide `H` by `ln C`, so that `S` lies in [0, 1] (FastBERT's "uncertainty").
        confidence_threshold: `confidence`: leave when `max p > c`.
        patience: `patience`: leave once the prediction has not changed for `t` consecutive exits
            (PABEE, Zhou et al. 2020); `t = 0` leaves at the first exit.
        regression_threshold: `patience` on regression: "unchanged" means `|z_i - z_{i-1}| < tau`.
        gate_threshold: `skip`: a layer is skipped for a sample whose gate is `>= r` (SmartBERT, Hu et al. 2023).
        min_exit_layer: no sample leaves before this 1-based layer.
        calibration: how the rule was chosen, when `hf-multiexit calibrate` (or training with
            `--calibrate_max_drop`) chose it: criterion, max_drop, delta, n, achieved risk, p-value, layer speed-up on
            the calibration split and every strategy's result (`hf_multiexit.calibration`). Informational: it
            changes no decision. `update` drops it when it changes the saved rule, which the record then no
            longer describes; it is written to `exit_config.json` only when set, so uncalibrated files stay
            readable by earlier versions.
    """

    exit_strategy: str = "none"
    exit_layer: int | None = None
    entropy_threshold: float = 0.3
    normalize_entropy: bool = False
    confidence_threshold: float = 0.9
    patience: int = 2
    regression_threshold: float = 0.1
    gate_threshold: float = 0.5
    min_exit_layer: int = 1
    calibration: dict[str, Any] | None = None

    def __post_init__(self):
        self.validate()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def validate(self) -> None:
        """Checks the ranges that do not depend on the model; strategies check the rest when built."""

        def _number(name: str, low: float, high: float = math.inf) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name}={value!r} is out of range: it must be a number in [{low}, {high}].")

        _number("entropy_threshold", 0.0)
        _number("confidence_threshold", 0.0, 1.0)
        _number("regression_threshold", 0.0)
        _number("gate_threshold", 0.0, 1.0)
        for name, low in (("patience", 0), ("min_exit_layer", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r} is out of range: it must be an integer >= {low}.")
        if self.exit_layer is not None and (isinstance(self.exit_layer, bool) or not isinstance(self.exit_layer, int)):
            raise ValueError(f"exit_layer={self.exit_layer!r} must be an integer (a 1-based exit layer).")
        if not isinstance(self.normalize_entropy, bool):
            raise ValueError(f"normalize_entropy={self.normalize_entropy!r} must be True or False.")
        if not isinstance(self.exit_strategy, str):
            raise ValueError(f"exit_strategy={self.exit_strategy!r} must be a strategy name (a string).")
        if self.calibration is not None and not isinstance(self.calibration, dict):
            raise ValueError(f"calibration={self.calibration!r} must be a dict (the calibration record) or None.")

    def update(self, **kwargs: Any) -> ExitConfig:
        """Returns a validated copy with `kwargs` applied; an unknown name raises `ValueError` listing the valid ones."""
        unknown = sorted(set(kwargs) - set(self.field_names()))
        if unknown:
            raise ValueError(f"Unknown exit argument(s) {unknown}; valid exit arguments are {self.field_names()}.")
        new = copy.copy(self)
        for key, value in kwargs.items():
            setattr(new, key, value)
        if "calibration" not in kwargs and any(getattr(new, key) != getattr(self, key) for key in kwargs):
            new.calibration = None  # the record described the rule before this change
        new.validate()
        return new

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names()}

    def to_json_string(self) -> str:
        data = self.to_dict()
        if data["calibration"] is None:
            del data["calibration"]
        return json.dumps({**data, "format_version": EXIT_CONFIG_FORMAT_VERSION}, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], source: str = "the exit config") -> ExitConfig:
        config_dict = dict(config_dict)
        version = config_dict.pop("format_version", EXIT_CONFIG_FORMAT_VERSION)
        unknown = sorted(set(config_dict) - set(cls.field_names()))
        if unknown:
            raise ValueError(
                f"{source} has field(s) {unknown} that this version does not know (format_version {version}, this "
                f"code reads version {EXIT_CONFIG_FORMAT_VERSION}; known fields: {cls.field_names()}). Upgrade "
                "hf-multiexit, or remove those fields from the file."
            )
        return cls(**config_dict)

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Writes `exit_config.json` atomically (temporary file, then rename); returns its path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, EXIT_CONFIG_NAME)
        fd, tmp = tempfile.mkstemp(dir=save_directory, prefix=".exit_config.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json_string() + "\n")
            os.chmod(tmp, 0o644)  # mkstemp creates 0600; the file travels with the model
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return path

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **hub_kwargs: Any) -> ExitConfig:
        """Reads `exit_config.json` from a folder or a Hub repo (`hub_kwargs` as for `cached_file`)."""
        path = cls._resolve(pretrained_model_name_or_path, **hub_kwargs)
        if path is None:
            raise OSError(f"No {EXIT_CONFIG_NAME} found in {pretrained_model_name_or_path}.")
        return cls._read(path)

    @classmethod
    def from_pretrained_or_default(cls, pretrained_model_name_or_path: str | os.PathLike, **hub_kwargs: Any) -> ExitConfig:
        """Like `from_pretrained`, but a checkpoint without `exit_config.json` (a plain BERT) gives the defaults."""
        path = cls._resolve(pretrained_model_name_or_path, **hub_kwargs)
        return cls() if path is None else cls._read(path)

    @classmethod
    def _read(cls, path: str) -> ExitConfig:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON ({err}); re-save it with ExitConfig.save_pretrained.") from err
        return cls.from_dict(data, source=path)

    @staticmethod
    def _resolve(pretrained_model_name_or_path: str | os.PathLike, **hub_kwargs: Any) -> str | None:
        if os.path.isdir(pretrained_model_name_or_path):
            path = os.path.join(pretrained_model_name_or_path, EXIT_CONFIG_NAME)
            return path if os.path.isfile(path) else None
        from transformers.utils import cached_file

        return cached_file(
            pretrained_model_name_or_path,
            EXIT_CONFIG_NAME,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )


__all__ = ["EXIT_CONFIG_NAME", "ExitConfig"]
