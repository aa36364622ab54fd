"""`ORTMultiExitModelForSequenceClassification`: an exported multi-exit model (`hf-multiexit export`) run by ONNX
Runtime, one session per segment, inside the exit loops PyTorch runs (`early_exit_loop` / `all_exits_loop`: this
class implements their `ExitLoopSegments` protocol), so exit strategies, compaction of exited rows and padding
columns, and the outputs are those of the PyTorch model."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from ..models.multiexit_bert import AUTO_FAMILIES, ExitConfig, build_exit_strategy
from ..models.multiexit_bert.modeling_multiexit_bert import (
    MultiExitModelOutput,
    all_exits_gate_mode,
    all_exits_loop,
    early_exit_loop,
    resolve_exit_config,
)
from .export import MANIFEST_FORMAT_VERSION, MANIFEST_NAME, config_fingerprint


def session_options(intra_op_num_threads: int | None = None, spinning: bool = False):
    """The session options every segment gets: all graph optimisations (operator fusion, constant folding) and
    `intra_op_num_threads` threads (default: ONNX Runtime's, one per physical core). Spinning is off by default: the
    loop calls a different session for every segment, and each session has its own thread pool, whose threads would
    keep spinning after their call and take the cores from the next session's (on 200 SST-2 sentences at batch 1 the
    loop ran 6x slower with spinning on; `benchmarks/onnx_speed.py` records the settings it measures)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = intra_op_num_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


class Graph:
    """One segment's ONNX Runtime session, called with the loop's tensors. The exporter leaves out inputs a segment
    never reads (a [CLS] head's mask, the token types of a backbone without segments), so only the declared ones
    are fed."""

    def __init__(self, session):
        self.session = session
        self.input_names = {item.name for item in session.get_inputs()}

    def __call__(self, **feeds: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0])


def _as_long_tensor(value: Any, name: str) -> torch.Tensor | None:
    """A tokenizer output (torch tensor, numpy array or nested lists) as an int64 CPU tensor."""
    if value is None:
        return None
    tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    if tensor.dim() != 2 or tensor.is_floating_point():
        raise ValueError(f"{name} must be a 2D array of integers (batch, sequence), got shape {tuple(tensor.shape)} of {tensor.dtype}.")
    return tensor.to("cpu", torch.long).contiguous()


class ORTMultiExitModelForSequenceClassification:
    """A folder written by `hf-multiexit export`, called like the PyTorch model:

        model = ORTMultiExitModelForSequenceClassification.from_pretrained("out")
        batch = tokenizer(texts, padding=True, return_tensors="np")  # or "pt"
        out = model(**batch, exit_strategy="entropy", entropy_threshold=0.3)  # or the folder's exit_config.json
        out.logits, out.exit_layers

    Exit arguments work per call and from `exit_config` as in PyTorch; `output_all_exits=True` runs every layer and
    returns `all_logits`. Outputs are torch tensors (`MultiExitModelOutput`). Inference only (no labels, no
    gradients, no hidden states).
    """

    training = False
    device = torch.device("cpu")

    def __init__(self, folder: str, config, exit_config: ExitConfig, manifest: dict, sessions: dict[str, Any]):
        self.folder, self.config, self.manifest = folder, config, manifest
        graphs = {file: Graph(session) for file, session in sessions.items()}
        self.embeddings = graphs[manifest["embeddings"]]
        self.layers = [graphs[file] for file in manifest["layers"]]
        self.exits = {int(layer): graphs[file] for layer, file in manifest["exits"].items()}
        self.gates = [graphs[file] for file in manifest["gates"]] if manifest["gates"] else None
        self.num_layers = config.num_hidden_layers
        self.num_labels = config.num_labels
        self.exit_index = {layer: i for i, layer in enumerate(config.exit_layers)}
        self.exit_config = exit_config

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        *,
        exit_config: ExitConfig | None = None,
        intra_op_num_threads: int | None = None,
        options=None,
        providers: list | None = None,
    ) -> ORTMultiExitModelForSequenceClassification:
        """Loads an export folder. `options` (an `onnxruntime.SessionOptions`) replaces `session_options(...)`;
        `providers` defaults to the CPU. A folder that is not a finished export, lacks a graph, or whose graphs do
        not fit its `config.json` is a `ValueError`/`FileNotFoundError` saying which."""
        import onnxruntime
        from transformers import AutoConfig

        folder = os.fspath(folder)
        manifest_path = os.path.join(folder, MANIFEST_NAME)
        if not os.path.isfile(manifest_path):
            raise FileNotFoundError(
                f"{folder!r} has no {MANIFEST_NAME}: it is not a finished `hf-multiexit export` folder "
                f"(export a trained model with `hf-multiexit export --model DIR --output {folder}`)."
            )
        with open(manifest_path, encoding="utf-8") as f:
            manifest = json.load(f)
        if manifest.get("format_version") != MANIFEST_FORMAT_VERSION:
            raise ValueError(
                f"{manifest_path} has format_version {manifest.get('format_version')!r}; this version reads "
                f"{MANIFEST_FORMAT_VERSION}. Export the model again with this version."
            )
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            fingerprint = config_fingerprint(json.load(f))
        config = AutoConfig.from_pretrained(folder)
        cls._check_manifest(folder, config, manifest, fingerprint)
        options = options or session_options(intra_op_num_threads)
        providers = providers or ["CPUExecutionProvider"]
        files = {manifest["embeddings"], *manifest["layers"], *manifest["exits"].values(), *(manifest["gates"] or ())}
        sessions = {}
        for file in sorted(files):
            path = os.path.join(folder, file)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} is missing: the export folder is incomplete; export the model again.")
            sessions[file] = onnxruntime.InferenceSession(path, options, providers=providers)
        cls._check_graphs(folder, config, manifest, sessions)
        if exit_config is None:
            exit_config = ExitConfig.from_pretrained_or_default(folder)
        return cls(folder, config, exit_config, manifest, sessions)

    @staticmethod
    def _check_manifest(folder: str, config, manifest: dict, fingerprint: str) -> None:
        """Refuses graphs that were not made from this `config.json`: a different fingerprint, or tables whose
        layers, exits or gates are not the config's."""
        if type(config) not in AUTO_FAMILIES:
            raise ValueError(f"{folder}/config.json is a {config.model_type!r} config, not a multi-exit model's.")
        problems = []
        if manifest.get("config_sha256") != fingerprint:
            problems.append("config.json is not the one the graphs were exported from")
        if len(manifest["layers"]) != config.num_hidden_layers:
            problems.append(f"{len(manifest['layers'])} layer graphs for num_hidden_layers={config.num_hidden_layers}")
        if sorted(int(layer) for layer in manifest["exits"]) != list(config.exit_layers):
            problems.append(f"exit graphs at layers {sorted(int(k) for k in manifest['exits'])} for exit_layers={list(config.exit_layers)}")
        if bool(manifest["gates"]) != bool(config.use_skip_gates):
            problems.append(f"gate graphs {'present' if manifest['gates'] else 'absent'} but use_skip_gates={config.use_skip_gates}")
        if problems:
            raise ValueError(
                f"The graphs in {folder!r} do not match its config.json: {'; '.join(problems)}. Export the model again "
                "(hf-multiexit export --model DIR --output OUT) instead of mixing files of different exports."
            )

    @staticmethod
    def _check_graphs(folder: str, config, manifest: dict, sessions: dict) -> None:
        """Each graph's declared output width against the config (hidden size for embeddings and layers, labels for
        exits), so a graph file copied in from another model is refused before it computes anything."""
        widths = {manifest["embeddings"]: config.hidden_size, **dict.fromkeys(manifest["layers"], config.hidden_size)}
        widths.update(dict.fromkeys(manifest["exits"].values(), config.num_labels))
        for file, width in widths.items():
            shape = sessions[file].get_outputs()[0].shape
            if shape and isinstance(shape[-1], int) and shape[-1] != width:
                raise ValueError(
                    f"{os.path.join(folder, file)} outputs width {shape[-1]}, but config.json says {width}: the graph "
                    "belongs to another model. Export the model again."
                )

    # ----- exit rule -----
    @property
    def exit_config(self) -> ExitConfig:
        return self._exit_config

    @exit_config.setter
    def exit_config(self, value: ExitConfig) -> None:
        if not isinstance(value, ExitConfig):
            raise ValueError(f"exit_config must be an ExitConfig, got {type(value).__name__}.")
        build_exit_strategy(value, self.config)
        self._exit_config = value

    def eval(self) -> ORTMultiExitModelForSequenceClassification:
        return self

    # ----- the segments the exit loops call (`ExitLoopSegments`) -----
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        return self.embeddings(
            input_ids=input_ids.numpy(), attention_mask=attention_mask.numpy(), token_type_ids=token_type_ids.numpy()
        )

    def layer_context(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> np.ndarray:
        # The graphs always take a mask; "no padding" is one of ones (the same result as PyTorch's None).
        if attention_mask is None:
            return np.ones(hidden_states.shape[:2], dtype=np.int64)
        return attention_mask.numpy()

    def run_layer(self, index: int, hidden_states: torch.Tensor, context: np.ndarray) -> torch.Tensor:
        return self.layers[index](hidden_states=hidden_states.numpy(), attention_mask=context)

    def exit_logits(self, layer: int, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        mask = self.layer_context(hidden_states, attention_mask)
        return self.exits[layer](hidden_states=hidden_states.numpy(), attention_mask=mask)

    def gate(self, index: int, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        mask = self.layer_context(hidden_states, attention_mask)
        return self.gates[index](hidden_states=hidden_states.numpy(), attention_mask=mask)

    def __call__(self, *args, **kwargs) -> MultiExitModelOutput:
        return self.forward(*args, **kwargs)

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        *,
        exit_config: ExitConfig | None = None,
        output_all_exits: bool | None = None,
        gate_mode: str | None = None,
        **exit_kwargs,
    ) -> MultiExitModelOutput:
        """As `MultiExitModel.forward` in eval mode; inputs may be numpy arrays, torch tensors or lists."""
        for unsupported in ("labels", "output_hidden_states", "gradient_equilibrium"):
            value = exit_kwargs.pop(unsupported, None)
            if value is not None and value is not False:
                raise ValueError(f"{unsupported} is not available from ONNX Runtime graphs (inference only); use the PyTorch model.")
        config = resolve_exit_config(self.exit_config, exit_config, exit_kwargs)
        strategy = build_exit_strategy(config, self.config)
        input_ids = _as_long_tensor(input_ids, "input_ids")
        attention_mask = _as_long_tensor(attention_mask, "attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        token_type_ids = _as_long_tensor(token_type_ids, "token_type_ids")
        hidden_states = self.embed(input_ids, attention_mask, token_type_ids)
        if output_all_exits:
            gates = all_exits_gate_mode(gate_mode, self.config, self.gates is not None, training=False)
            return all_exits_loop(self, hidden_states, attention_mask, gate_mode=gates, gate_threshold=self.config.gate_threshold)
        return early_exit_loop(self, hidden_states, attention_mask, strategy)
