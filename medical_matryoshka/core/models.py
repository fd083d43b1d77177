"""Model resolution: an installed offline copy, the embedded default, a local folder, the local HF cache, or the hub."""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from medical_matryoshka.core.digests import folder_digest
from medical_matryoshka.core.errors import PipelineError, require_input
from medical_matryoshka.core.offline_models import installed_path
from medical_matryoshka.core.sections import ModelConfig, ModelSource, PathsConfig

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


def with_prepared_length(cfg: ModelConfig, paths: PathsConfig) -> ModelConfig:
    """`cfg` at the max_seq_length `prepare` chose (model.max_seq_length auto, or the fixed value it checked) and
    wrote to <prepared>/<lengths_file>: every stage after prepare reads its texts at that one length."""
    import json

    lengths = require_input(paths.prepared_lengths, "prepare")
    try:
        length = int(json.loads(lengths.read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        raise PipelineError(f"{lengths} is damaged; rerun prepare (dvc repro -f prepare)") from None
    return dataclasses.replace(cfg, max_seq_length=length)


def load_model(cfg: ModelConfig) -> SentenceTransformer:
    """Load a SentenceTransformer at the config's max_seq_length and check the Matryoshka dims fit it."""
    from sentence_transformers import SentenceTransformer

    if not isinstance(cfg.max_seq_length, int):
        raise PipelineError(
            f"model.max_seq_length is {cfg.max_seq_length!r}: prepare resolves it; load the model with the prepared "
            "length (core.models.with_prepared_length) after `dvc repro prepare`"
        )

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


@dataclasses.dataclass(frozen=True)
class ModelLimits:
    """What a model can read: the length it was trained at (its own max_seq_length; None: unknown) and the
    longest input its position embeddings take."""

    trained: int | None
    positions: int

    @property
    def auto_cap(self) -> int:
        """The longest length `max_seq_length: auto` picks: the model's own, which it was trained at."""
        return min(self.trained or self.positions, self.positions)


UNBOUNDED = 100_000  # a tokenizer's model_max_length above this means "not set" (transformers' huge default)


def model_limits(cfg: ModelSource, tokenizer) -> ModelLimits:
    """The model's own max_seq_length (sentence_bert_config.json) and its position limit (config.json's
    max_position_embeddings, or the tokenizer's model_max_length where lower: RoBERTa-style models reserve
    positions for padding)."""
    from transformers import AutoConfig

    path = resolve_model_path(cfg)
    try:
        config = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise PipelineError(f"cannot read the config of '{cfg.name}': {str(err).splitlines()[0]}") from None
    positions = getattr(config, "max_position_embeddings", None) or UNBOUNDED
    if tokenizer.model_max_length < UNBOUNDED:
        positions = min(positions, int(tokenizer.model_max_length))
    return ModelLimits(_own_max_seq_length(path), positions)


def _own_max_seq_length(path: str) -> int | None:
    """max_seq_length of the sentence-transformers config in the model folder (or on the hub), if it has one."""
    import json

    local = Path(path) / "sentence_bert_config.json"
    if not local.is_file():
        try:
            from huggingface_hub import hf_hub_download

            local = Path(hf_hub_download(path, "sentence_bert_config.json"))
        except Exception:  # noqa: BLE001 - a plain transformers model has none: its limit is its positions
            return None
    try:
        value = json.loads(local.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


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
