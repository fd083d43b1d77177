"""Model resolution: an installed offline copy, the embedded default, a local folder, the local HF cache, or the hub."""

from __future__ import annotations

import importlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from medical_matryoshka.core.digests import folder_digest
from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.offline_models import installed_path
from medical_matryoshka.core.sections import ModelConfig, ModelSource

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase


MODEL_MARKERS = ("modules.json", "config.json")  # a sentence-transformers / a transformers model folder


def _hub_reachable(timeout: float = 5.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def resolve_model_path(cfg: ModelSource) -> str:
    """Where to load the model from, without a slow network round-trip when the hub is unreachable."""
    if cfg.install:
        return str(installed_path(cfg.install))
    if cfg.embedded_package:
        try:
            module = importlib.import_module(cfg.embedded_package)
        except ImportError:
            raise PipelineError(
                f"model '{cfg.name}' is embedded in the package '{cfg.embedded_package}', which is not installed; "
                "run the README's setup command (bash setup.sh)"
            ) from None
        return str(module.get_model_path())
    if Path(cfg.name).is_dir():
        if not any((Path(cfg.name) / marker).is_file() for marker in MODEL_MARKERS):
            raise PipelineError(
                f"model.name {cfg.name} is a folder but not a model (no {' or '.join(MODEL_MARKERS)}); point it at "
                "a sentence-transformers or Hugging Face model folder, or at a hub id"
            )
        return cfg.name
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(cfg.name, local_files_only=True)
    except Exception:  # not in the local cache: fall through to the hub
        pass
    if not _hub_reachable():
        raise PipelineError(
            f"cannot load model '{cfg.name}': it is not in the local Hugging Face cache and the hub is unreachable; "
            "run once on a machine with hub access, set model.name to a local folder, "
            "or use the embedded default (-S model=minilm)"
        )
    return cfg.name


def load_model(cfg: ModelConfig) -> SentenceTransformer:
    """Load a SentenceTransformer and check the configured Matryoshka dims fit it."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(cfg)
    try:
        model = SentenceTransformer(path)
    except OSError as err:
        raise PipelineError(f"cannot load model '{cfg.name}' from {path}: {str(err).splitlines()[0]}") from None
    model.max_seq_length = cfg.max_seq_length
    check_dims(cfg, model.get_embedding_dimension())
    return model


def check_dims(cfg: ModelConfig, model_dim: int | None) -> None:
    if model_dim is not None and cfg.dims[0] > model_dim:
        raise PipelineError(
            f"model.dims {list(cfg.dims)} exceed the dimension {model_dim} of '{cfg.name}'; "
            f"use dims <= {model_dim} (conf/model/*.yaml or -S 'model.dims=[...]')"
        )


def load_tokenizer(cfg: ModelSource) -> PreTrainedTokenizerBase:
    """The model's tokenizer alone (prepare needs token counts, not the weights)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(cfg)
    try:
        return AutoTokenizer.from_pretrained(path)
    except OSError as err:
        raise PipelineError(f"cannot load the tokenizer of '{cfg.name}': {str(err).splitlines()[0]}") from None


def encode(model: SentenceTransformer, texts: list[str], label: str, method: str = "encode", **kwargs):
    """`model.<method>(texts, **kwargs)` (encode, encode_query, encode_document) with a progress bar named
    `label`: sentence-transformers names every encoding bar "Batches" and hides it unless logging is at INFO."""
    import sentence_transformers.sentence_transformer.model as st_model

    original = getattr(st_model, "trange", None)  # the bar of SentenceTransformer.encode (6.x)

    plain = os.environ.get("TQDM_DISABLE") == "1"  # not a terminal (errors.quiet_progress_bars): a line instead

    def labelled(*args, **options):
        return original(*args, **{**options, "desc": label, "leave": False, **({"disable": True} if plain else {})})

    if original is not None:
        st_model.trange = labelled
    start = time.perf_counter()
    try:
        return getattr(model, method)(texts, show_progress_bar=True, **kwargs)
    finally:
        if original is not None:
            st_model.trange = original
        if plain:
            print(f"{label}: encoded in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


MODEL_TAG = "model.sha256"  # evaluate tags the pipeline's parent run with the weights it evaluated


def weights_digest(folder: str | Path) -> str:
    """sha256 of a saved model's weight files (names and bytes), the same for the same weights wherever they
    are copied: how `commands.register` finds the run that produced a model folder."""
    return folder_digest(Path(folder), "*.safetensors")
