"""`hf-multiexit export`: a multi-exit model as one ONNX graph per segment, for ONNX Runtime.

An ONNX graph cannot stop in the middle, so per-sample early exit keeps its loop in host code
(`modeling_multiexit_bert.early_exit_loop`, the loop PyTorch runs too) around graphs of the pieces it calls: the
embeddings, each encoder layer step, each exit head and each skip gate. Every graph takes dynamic batch and
sequence axes (`attention_mask` is the 2D 0/1 padding mask; a layer builds its attention mask from it inside the
graph, as `adapter.layer_context` does in PyTorch), so the loop can drop rows and cut padding columns between calls.

Graphs come from torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`, which needs `onnxscript`), are
checked with `onnx.checker`, then run once in ONNX Runtime against the PyTorch segment on the same input, so a
folder is written only when every graph reproduces its segment. `--quantize int8` then applies ONNX Runtime's
dynamic quantization (`onnxruntime.quantization.quantize_dynamic`: int8 weights, activations quantized per call).
The folder is written beside its destination and moved into place whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..io import check_model_path

logger = logging.getLogger(__name__)

MANIFEST_NAME = "onnx_segments.json"
"""The folder's table of graphs; written last, so a folder without it is not a finished export."""
MANIFEST_FORMAT_VERSION = 1
MIN_OPSET = 18
"""torch's dynamo exporter writes opset 18 and newer (older opsets only through the deprecated TorchScript exporter)."""
QUANTIZATIONS = ("int8",)
EXPORT_TOLERANCE = 1e-4
"""Largest difference between a graph's fp32 output and its PyTorch segment's on the export example."""


def max_opset() -> int:
    """The newest opset the installed `onnx` defines (whether ONNX Runtime runs it too is checked on each graph)."""
    import onnx

    return onnx.defs.onnx_opset_version()


def config_fingerprint(config_dict: dict) -> str:
    """SHA-256 of a model config's JSON (keys sorted, `transformers_version` left out): what the graphs were made
    from, so that a folder whose `config.json` was swapped for another model's is refused."""
    content = {key: value for key, value in config_dict.items() if key != "transformers_version"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


@dataclass
class ExportArguments:
    """`hf-multiexit export`: writes ONNX graphs of a trained multi-exit model for
    `hf_multiexit.onnx.ORTMultiExitModelForSequenceClassification`."""

    model: str = field(metadata={"help": "A saved multi-exit model folder (the --output_dir of `hf-multiexit train`)."})
    output: str = field(metadata={"help": "Folder to write: the graphs, tokenizer, config.json and exit_config.json."})
    quantize: str | None = field(
        default=None,
        metadata={"help": "int8: ONNX Runtime dynamic quantization of every graph (int8 weights, activations "
                          "quantized per call); default: fp32.", "choices": [None, *QUANTIZATIONS]},
    )
    opset: int = field(default=MIN_OPSET, metadata={"help": f"ONNX opset of the graphs ({MIN_OPSET} or newer)."})

    def __post_init__(self):
        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ValueError(f"--quantize={self.quantize!r} is not supported; choose one of {list(QUANTIZATIONS)} or leave it out (fp32).")
        newest = max_opset()
        if not MIN_OPSET <= self.opset <= newest:
            raise ValueError(
                f"--opset={self.opset} is not supported: torch's exporter writes opsets {MIN_OPSET}..{newest} with the "
                "installed onnx."
            )
        check_model_path(self.model, "--model", "the --output_dir of `hf-multiexit train`", hub_id=False)
        if os.path.abspath(self.output) == os.path.abspath(self.model):
            raise ValueError("--output must differ from --model: the export is a folder of its own.")


class HiddenSegment(nn.Module):
    """A piece of the model that reads `(hidden_states, attention_mask)`, as a module of its own for the exporter.
    `base` is registered, so the parameters `run` uses become the graph's weights (the exporter keeps only those)."""

    def __init__(self, base: nn.Module, run: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.base, self.run = base, run

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.run(hidden_states, attention_mask)


class EmbeddingsSegment(nn.Module):
    """The backbone's embeddings (`adapter.embed`): the first layer's input from the token ids."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.base.adapter.embed(self.base.backbone, input_ids, token_type_ids, attention_mask)


@dataclass
class Segment:
    """One graph to write: its file, module, example inputs and their names."""

    file: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]


def example_batch(config, batch_size: int = 3, length: int = 9) -> dict[str, torch.Tensor]:
    """The export example: several rows of different lengths (so neither axis is specialised to 1 and the mask
    path is traced), token ids past the special ones."""
    generator = torch.Generator().manual_seed(0)
    vocab = config.backbone_config.vocab_size
    input_ids = torch.randint(min(5, vocab - 1), vocab, (batch_size, length), generator=generator)
    lengths = torch.tensor([length - 3 * row for row in range(batch_size)]).clamp_min(2)
    attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}


def model_segments(base: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[list[Segment], dict]:
    """The segments of a `MultiExitModel` in eval mode and the manifest entries naming their files. Steps that apply
    one shared module (ALBERT's layer groups) share one graph: `run_layer` depends on the step only through it."""
    mask = batch["attention_mask"]
    embeddings = EmbeddingsSegment(base)
    with torch.no_grad():
        hidden = embeddings(batch["input_ids"], mask, batch["token_type_ids"])
    hidden_inputs = ["hidden_states", "attention_mask"]
    segments = [Segment("embeddings.onnx", embeddings, (batch["input_ids"], mask, batch["token_type_ids"]),
                        ["input_ids", "attention_mask", "token_type_ids"])]

    def add(file: str, run: Callable) -> str:
        segments.append(Segment(file, HiddenSegment(base, run), (hidden, mask), hidden_inputs))
        return file

    layer_files, first_step = [], {}
    for index, module in enumerate(base.layer_modules()):
        if id(module) not in first_step:
            first_step[id(module)] = index
            add(f"layer_{index + 1}.onnx", lambda h, m, i=index: base.run_layer(i, h, base.layer_context(h, m)))
        layer_files.append(f"layer_{first_step[id(module)] + 1}.onnx")
    exits = {str(layer): add(f"exit_{layer}.onnx", lambda h, m, j=layer: base.exit_logits(j, h, m)) for layer in base.exit_index}
    gates = None
    if base.skip_gates is not None:
        gates = [add(f"gate_{index + 1}.onnx", lambda h, m, i=index: base.gate(i, h, m)) for index in range(base.num_layers)]
    return segments, {"embeddings": "embeddings.onnx", "layers": layer_files, "exits": exits, "gates": gates}


def export_segment(segment: Segment, path: str, opset: int) -> None:
    """Writes one graph with dynamic batch and sequence axes (weights inside the file: every segment of the
    supported encoders is far below protobuf's 2 GB), checks it with `onnx.checker` and against PyTorch."""
    import onnx
    import onnxruntime

    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = tuple({0: batch, 1: sequence} for _ in segment.inputs)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    # The exporter warns, on every call, about torchvision operators it cannot register (torchvision is not used).
    exporter_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's own progress notes and deprecation chatter
            program = torch.onnx.export(
                segment.module, segment.inputs, dynamic_shapes=dynamic, input_names=segment.input_names,
                output_names=["output"], opset_version=opset, dynamo=True, external_data=False, verbose=False,
            )
            program.save(path, external_data=False)
            expected = segment.module(*segment.inputs).float().numpy()
    finally:
        exporter_log.setLevel(level)
    onnx.checker.check_model(path, full_check=True)
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own exception classes (Fail, InvalidGraph, ...)
        raise RuntimeError(
            f"ONNX Runtime {onnxruntime.__version__} cannot load the exported {os.path.basename(path)} (opset {opset}): "
            f"{err}. Choose an opset it supports, e.g. --opset {MIN_OPSET}."
        ) from err
    feeds = {item.name: value.numpy() for item, value in zip(session.get_inputs(), segment.inputs)}
    actual = session.run(None, feeds)[0]
    difference = float(abs(actual - expected).max())
    if not difference <= EXPORT_TOLERANCE:
        raise RuntimeError(
            f"The exported {os.path.basename(path)} differs from the PyTorch model by {difference:.3g} "
            f"(tolerance {EXPORT_TOLERANCE}); the graph is not written."
        )


def quantize_int8(path: str) -> None:
    """ONNX Runtime's dynamic quantization in place: int8 weights (`QuantType.QInt8`), activations quantized to
    uint8 per call, the operator types ONNX Runtime quantizes by default."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    prepared, quantized = path + ".prepared", path + ".int8"
    # ONNX Runtime's recommended preparation (shape inference, graph optimisation) before quantizing; its symbolic
    # shape inference stops at the exporter's shape arithmetic ("Incomplete symbolic shape inference"), so ONNX's
    # own shape inference stands in for it.
    quant_pre_process(path, prepared, skip_symbolic_shape=True)
    quantize_dynamic(prepared, quantized, weight_type=QuantType.QInt8)
    os.replace(quantized, path)
    os.remove(prepared)


def check_output_folder(destination: str) -> None:
    """`ValueError` when `destination` holds something other than an earlier export, which the export would replace."""
    if os.path.isdir(destination) and os.listdir(destination) and not os.path.isfile(os.path.join(destination, MANIFEST_NAME)):
        raise ValueError(
            f"--output {destination!r} is a folder that is not an ONNX export of this tool; it is left as it is. "
            "Choose a new or empty folder."
        )
    if os.path.exists(destination) and not os.path.isdir(destination):
        raise ValueError(f"--output {destination!r} is a file; choose a folder.")


def _replace_folder(source: str, destination: str) -> None:
    """Moves the finished folder `source` to `destination`, replacing an earlier export there (checked again: another
    process may have written there meanwhile)."""
    check_output_folder(destination)
    if os.path.exists(destination):
        old = tempfile.mkdtemp(dir=os.path.dirname(destination), prefix=".replaced-export-")
        os.replace(destination, os.path.join(old, "export"))
        os.replace(source, destination)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, destination)


def export_model(model_path: str, output: str, quantize: str | None = None, opset: int = MIN_OPSET) -> dict:
    """Exports the trained multi-exit model in `model_path` to `output` (see the module docstring); returns the
    manifest. Nothing is left at `output` when any graph fails."""
    import onnx
    from transformers import AutoTokenizer

    from ..evaluation.command import trained_model_config
    from ..models.multiexit_bert import AUTO_FAMILIES

    output = os.path.abspath(output)
    check_output_folder(output)  # before minutes of exporting
    config = trained_model_config(model_path, "export", "an exported graph would compute noise")
    _, classifier_class = AUTO_FAMILIES[type(config)]
    model = classifier_class.from_pretrained(model_path, config=config).eval()
    # Traced with eager attention: the graph then holds plain MatMul/Softmax that ONNX Runtime fuses itself, and it
    # does not depend on how SDPA's mask path traces (ModernBERT's sliding-window layers exported through SDPA came
    # out 0.5 away from PyTorch; eager ones match to 1e-6).
    model.set_attn_implementation("eager")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = model.base_model
    segments, files = model_segments(base, example_batch(config))
    os.makedirs(os.path.dirname(output), exist_ok=True)
    work = tempfile.mkdtemp(dir=os.path.dirname(output), prefix=f".{os.path.basename(output)}.exporting-")
    os.chmod(work, 0o755)  # mkdtemp makes it private; the export is meant to be read by others (a server user)
    try:
        for number, segment in enumerate(segments, 1):
            logger.info("Exporting %s (%d of %d)", segment.file, number, len(segments))
            path = os.path.join(work, segment.file)
            export_segment(segment, path, opset)
            if quantize == "int8":
                quantize_int8(path)
        model.config.save_pretrained(work)
        model.exit_config.save_pretrained(work)
        tokenizer.save_pretrained(work)
        with open(os.path.join(work, "config.json"), encoding="utf-8") as f:
            fingerprint = config_fingerprint(json.load(f))
        manifest = {
            "format_version": MANIFEST_FORMAT_VERSION,
            "config_sha256": fingerprint,
            "opset": opset,
            "quantization": quantize,
            "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}, onnx {onnx.__version__}",
            "source_model": os.path.abspath(model_path),
            **files,
        }
        with open(os.path.join(work, MANIFEST_NAME), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
        _replace_folder(work, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest
