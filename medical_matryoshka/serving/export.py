"""Write a fine-tuned sentence-transformers model for a CPU runtime: OpenVINO IR or ONNX, float or int8 weights.

The graph is the WHOLE model (WholeModel: transformer, pooling, every Dense / Normalize after it, a final
normalisation), so its output equals `SentenceTransformer.encode(..., normalize_embeddings=True)`; exporting
the transformer alone would silently drop the PCA rotation's Dense layer. Without optimum (whose
optimum-onnx / optimum-intel pin transformers below this project's 5.x), from the runtimes' own tools:
- openvino: `openvino.convert_model` of the traced module; int8 = NNCF `compress_weights` (int8 weights, per
  output channel, asymmetric; activations stay float). Compiled with the CPU's default inference precision
  (bf16 on CPUs with AMX / AVX-512 BF16, f32 elsewhere) unless the manifest says otherwise.
- onnx: `torch.onnx.export` (TorchScript exporter) with eager attention, which onnxruntime's transformer
  optimizer fuses into its Attention / SkipLayerNorm kernels (it does not fuse the SDPA graph); int8 =
  onnxruntime's dynamic quantization, per-channel weights (activations quantized per batch at run time).
The folder: the model file, `tokenizer/`, and export.json (what serving.encoder needs to encode the same way).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.sections import EXPORT_RUNTIMES, EXPORT_WEIGHTS
from medical_matryoshka.serving.encoder import MANIFEST, TOKENIZER

GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # in this order, those the tokenizer gives
OUTPUT = "sentence_embedding"
RUNTIME_PACKAGE = {"openvino": "openvino", "onnx": "onnxruntime"}
FILES = {"openvino": "model.xml", "onnx": "model.onnx"}  # model.xml has its weights in model.bin beside it
SAMPLE = ["Metformin lowers HbA1c in adults with type 2 diabetes.", "Aspirin and stroke."]  # traced shapes


class WholeModel(torch.nn.Module):
    """The sentence-transformers model as one graph: token ids in, unit sentence embeddings out."""

    def __init__(self, model, inputs: tuple[str, ...]):
        super().__init__()
        self.model, self.inputs = model, inputs

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        features = dict(zip(self.inputs, tensors, strict=True))
        return torch.nn.functional.normalize(self.model(features)["sentence_embedding"], dim=-1)


def check_exportable(model) -> list[str]:
    """The model's module classes; one line if a module is not a plain text pipeline the graph can hold."""
    modules = [type(module).__name__ for module in model]
    if not modules or modules[0] != "Transformer":
        raise PipelineError(f"cannot export a model whose first module is {modules[:1]}: a Transformer is needed")
    routed = [name for name in modules if name in ("Router", "Asym", "StaticEmbedding", "CLIPModel")]
    if routed:
        raise PipelineError(
            f"cannot export a model with a {routed[0]} module: the exported graph is one text path (modules {modules})"
        )
    return modules


def example_inputs(model) -> dict[str, torch.Tensor]:
    features = model.preprocess(SAMPLE)
    inputs = {name: features[name] for name in GRAPH_INPUTS if name in features}
    if "input_ids" not in inputs or "attention_mask" not in inputs:
        raise PipelineError(f"the model's tokenizer gives {sorted(features)}: input_ids and attention_mask are needed")
    return inputs


def _openvino(model, inputs: dict[str, torch.Tensor], target: Path, weights: str) -> dict[str, Any]:
    import openvino as ov

    with torch.inference_mode():
        graph = ov.convert_model(WholeModel(model, tuple(inputs)).eval(), example_input=tuple(inputs.values()))
    for port, name in zip(graph.inputs, inputs, strict=True):
        port.get_tensor().set_names({name})
    graph.outputs[0].get_tensor().set_names({OUTPUT})
    if weights == "int8":
        import nncf

        graph = nncf.compress_weights(graph)  # INT8_ASYM, per channel: weights only, no calibration data
    ov.save_model(graph, str(target), compress_to_fp16=False)  # float: f32 on disk, the runtime picks bf16 or f32
    return {}


def _onnx(model, inputs: dict[str, torch.Tensor], target: Path, weights: str) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    model = copy.deepcopy(model)  # the caller's model keeps its attention implementation
    transformer = model[0].auto_model
    transformer.set_attn_implementation("eager")  # the optimizer fuses eager attention only
    names = tuple(inputs)
    raw = target.with_name("raw.onnx")
    with torch.inference_mode():
        torch.onnx.export(
            WholeModel(model, names).eval(),
            tuple(inputs.values()),
            str(raw),
            input_names=list(names),
            output_names=[OUTPUT],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in names} | {OUTPUT: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    config = transformer.config
    fused: dict[str, int] = {}
    source = raw
    if config.model_type == "bert":  # onnxruntime's fusions are written for BERT's graph
        optimized = optimizer.optimize_model(
            str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
        )
        fused = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
        source = target.with_name("optimized.onnx")
        optimized.save_model_to_file(str(source))
    if weights == "int8":
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,  # per-tensor weights lose up to 0.11 of cosine and vary with the batch
            extra_options={"DefaultTensorType": 1},  # FLOAT: the fused contrib ops carry no inferred type
        )
    else:
        os.replace(source, target)
    for leftover in (raw, target.with_name("optimized.onnx")):
        leftover.unlink(missing_ok=True)
    return {"fused_operators": fused}


class _DropMessages(logging.Filter):
    def __init__(self, *parts: str):
        super().__init__()
        self.parts = parts

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(part in record.getMessage() for part in self.parts)


@contextlib.contextmanager
def known_harmless_warnings() -> Iterator[None]:
    """Silence what tracing the model prints and the export knows to be harmless, by category and message (other
    warnings still show): torch's TracerWarnings about Python booleans fixed in the trace (the padded-length and
    batch checks of serving/verify.py are what guard that), the ONNX exporter's note on aten::index,
    transformers' deprecation of is_gradient_checkpointing, and its `loss_type=None` line (an encoder computes
    no loss)."""
    from torch.jit import TracerWarning

    quiet = _DropMessages("`loss_type=None` was set in the config")
    logger = logging.getLogger("transformers.modeling_utils")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python", category=TracerWarning)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # the ONNX exporter's note on negative indices, which the model's indexing never uses (verify.py checks)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        logger.addFilter(quiet)
        try:
            yield
        finally:
            logger.removeFilter(quiet)


def export_model(
    model,
    folder: str | Path,
    runtime: str,
    weights: str,
    inference_precision: str = "auto",
    dims: tuple[int, ...] = (),
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `model` to `folder` (an empty folder) for `runtime` with `weights`; returns the manifest
    (export.json). `dims`: the Matryoshka dims it was trained for; `source`: where it came from (folder, weights
    sha256), both recorded for loaders and the registry."""
    if runtime not in EXPORT_RUNTIMES or weights not in EXPORT_WEIGHTS:
        raise PipelineError(f"export: runtime must be one of {EXPORT_RUNTIMES} and weights one of {EXPORT_WEIGHTS}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modules = check_exportable(model)
    model = model.to("cpu").float().eval()
    inputs = example_inputs(model)
    target = folder / FILES[runtime]
    with known_harmless_warnings():
        extra = (_openvino if runtime == "openvino" else _onnx)(model, inputs, target, weights)
    model.tokenizer.save_pretrained(str(folder / TOKENIZER))
    manifest = {
        "runtime": runtime,
        "weights": weights,
        "inference_precision": inference_precision if runtime == "openvino" else "f32",
        "file": FILES[runtime],
        "inputs": list(inputs),
        "output": OUTPUT,
        "dim": int(model.get_embedding_dimension()),
        "matryoshka_dims": list(dims),
        "max_seq_length": int(model.max_seq_length),
        "prompts": dict(model.prompts),
        "default_prompt_name": model.default_prompt_name,
        "modules": modules,
        "versions": {p: version(p) for p in (RUNTIME_PACKAGE[runtime], "torch", "sentence-transformers")},
        "source": source or {},
        **extra,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def model_bytes(folder: str | Path) -> int:
    """The model file's bytes on disk (OpenVINO: the .xml and its .bin), tokenizer excluded."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".xml", ".bin", ".onnx", ".data"))
