"""Encode texts with an exported model folder: OpenVINO or ONNX Runtime, the tokenizer beside it, no torch.

    from medical_matryoshka.serving.encoder import ExportedEncoder
    encoder = ExportedEncoder("models/exported", truncate_dim=256)
    vectors = encoder.encode_query(["Metformin lowers HbA1c."])  # (1, 256) float32 unit vectors

The graph holds the whole sentence-transformers model (transformer, pooling, every Dense and Normalize after
it), so a vector equals `SentenceTransformer.encode(texts, normalize_embeddings=True)`; `truncate_dim` keeps the
first components and renormalises them, as sentence-transformers does. encode_query / encode_document prepend
the model's "query" / "document" prompt, as sentence-transformers' methods of those names do. The folder's
export.json (written by serving.export) says which runtime, weights and inputs; this module uses only numpy,
the tokenizer (transformers) and that runtime: no sentence-transformers, no torch model code (transformers
still imports torch where it is installed; an image without torch was not tried).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "export.json"
TOKENIZER = "tokenizer"  # the model's tokenizer, saved by serving.export
PRECISION_HINTS = ("auto", "bf16", "f32")  # OpenVINO CPU inference precision; auto: the runtime's (bf16 on AMX)


class ExportError(ValueError):
    """An exported folder that cannot be used as it is (missing file, other runtime version, bad argument)."""


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{folder} is not an exported model (no {MANIFEST}); write one with `dvc repro export`")
    return json.loads(path.read_text(encoding="utf-8"))


def unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class ExportedEncoder:
    """An exported model folder, compiled for this CPU. `threads`: the runtime's intra-op threads (default: the
    runtime's choice, every core). `inference_precision` (OpenVINO): auto (default: the manifest's), bf16, f32."""

    def __init__(
        self,
        folder: str | Path,
        truncate_dim: int | None = None,
        threads: int | None = None,
        inference_precision: str | None = None,
    ):
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        self.dim = int(self.manifest["dim"])
        if truncate_dim is not None and not 0 < truncate_dim <= self.dim:
            raise ExportError(f"truncate_dim {truncate_dim} is not in 1..{self.dim}, the exported model's dimension")
        self.truncate_dim = truncate_dim
        self.max_seq_length = int(self.manifest["max_seq_length"])
        self.prompts = self.manifest.get("prompts", {})
        self.inputs = list(self.manifest["inputs"])
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.folder / TOKENIZER))
        self.inference_precision = inference_precision or self.manifest.get("inference_precision", "auto")
        if self.inference_precision not in PRECISION_HINTS:
            raise ExportError(f"inference_precision must be one of {', '.join(PRECISION_HINTS)}")
        runtime = self.manifest["runtime"]
        if runtime == "openvino":
            self._infer = self._openvino(threads)
        elif runtime == "onnx":
            self._infer = self._onnx(threads)
        else:
            raise ExportError(f"{self.folder / MANIFEST}: unknown runtime {runtime!r} (openvino or onnx)")

    def _openvino(self, threads: int | None):
        import openvino as ov

        config: dict[str, Any] = {}
        if self.inference_precision != "auto":
            config["INFERENCE_PRECISION_HINT"] = self.inference_precision
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = ov.Core().compile_model(str(self.folder / self.manifest["file"]), "CPU", config)
        self.runtime_precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # what runs here

        def infer(features: dict[str, np.ndarray]) -> np.ndarray:
            request = compiled.create_infer_request()  # one per call: safe under a threaded server
            return request.infer(features)[compiled.output(0)].copy()

        return infer

    def _onnx(self, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(
            str(self.folder / self.manifest["file"]), options, providers=["CPUExecutionProvider"]
        )
        self.runtime_precision = "f32"

        def infer(features: dict[str, np.ndarray]) -> np.ndarray:
            return session.run(None, features)[0]

        return infer

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The model inputs for `texts`, padded to the longest, cut at max_seq_length (sentence-transformers' way)."""
        features = self.tokenizer(
            texts, padding=True, truncation="longest_first", max_length=self.max_seq_length, return_tensors="np"
        )
        missing = [name for name in self.inputs if name not in features]
        if missing:
            raise ExportError(f"the tokenizer in {self.folder / TOKENIZER} gives no {missing[0]}; the graph needs it")
        return {name: features[name].astype(np.int64) for name in self.inputs}

    def encode(
        self,
        texts: str | list[str],
        batch_size: int = 32,
        prompt_name: str | None = None,
        prompt: str | None = None,
        truncate_dim: int | None = None,
        convert_to_tensor: bool = False,
        **_: Any,  # show_progress_bar, normalize_embeddings, ...: accepted as SentenceTransformer.encode does
    ):
        """Unit vectors of `texts` (one row each, input order), batched longest first as sentence-transformers
        batches; `prompt_name` picks one of the model's prompts, `prompt` gives one."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if prompt is None and prompt_name is None:
            prompt_name = self.manifest.get("default_prompt_name")  # as SentenceTransformer.encode falls back
        if prompt is None and prompt_name is not None:
            if prompt_name not in self.prompts:
                raise ExportError(f"prompt_name {prompt_name!r} is not one of the model's prompts {list(self.prompts)}")
            prompt = self.prompts[prompt_name]
        if prompt:
            texts = [prompt + text for text in texts]
        dim = truncate_dim or self.truncate_dim or self.dim
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            vectors = self._infer(self.tokenize([texts[i] for i in rows]))
            out[rows] = unit(vectors[:, :dim])
        if convert_to_tensor:
            import torch

            out = torch.from_numpy(out)
        return out[0] if single else out

    def encode_query(self, texts, **kwargs):
        if "query" in self.prompts and "prompt" not in kwargs:
            kwargs.setdefault("prompt_name", "query")
        return self.encode(texts, **kwargs)

    def encode_document(self, texts, **kwargs):
        for name in ("document", "passage", "corpus"):  # the document prompt names sentence-transformers tries
            if name in self.prompts and "prompt" not in kwargs:
                kwargs.setdefault("prompt_name", name)
                break
        return self.encode(texts, **kwargs)

    def get_embedding_dimension(self) -> int:
        return self.truncate_dim or self.dim


def default_threads() -> int | None:
    """$EXPORT_THREADS as the runtime's threads (the server reads it), else the runtime's own choice."""
    value = os.environ.get("EXPORT_THREADS")
    return int(value) if value else None
