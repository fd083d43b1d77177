"""The card's configuration (`model=biobert`) as a user with hub access runs it, proven without the hub.

The hub client leaves a downloaded model in the Hugging Face cache as blobs, a snapshot of links to them and
`refs/main`; a tiny 768-dimension BERT is laid out there under the card's model id, and the pipeline then runs
with the hub switched off (HF_HUB_OFFLINE=1): the route a user takes after the model's first download.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from medical_matryoshka.core.digests import sha256_of
from medical_matryoshka.core.dims import dim_key, dim_label
from tests.conftest import random_bert_model
from tests.repos import run, tiny_repo

pytestmark = pytest.mark.slow

CARD_MODEL = "pritamdeka/BioBERT-mnli-snli-scinli-scitail-mednli-stsb"
CARD_DIMS = [768, 512, 256, 128, 64]


def lay_out_hub_cache(model_dir: Path, cache: Path, repo_id: str, commit: str = "0123456789abcdef" * 2 + "01234567"):
    """`model_dir` as `huggingface_hub` stores a download in HF_HUB_CACHE: models--<org>--<name>/ with
    blobs/<content hash>, snapshots/<commit>/<file> -> relative link to its blob, refs/main = <commit>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    for file in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        blob = repo / "blobs" / sha256_of(file)
        shutil.copyfile(file, blob)
        link = repo / "snapshots" / commit / file.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo


@pytest.fixture(scope="module")
def bert_768_dir(tmp_path_factory, minilm_path) -> Path:
    """A 1-layer BERT with the card model's width (768)."""
    shape = {"hidden_size": 768, "num_hidden_layers": 1, "num_attention_heads": 12, "intermediate_size": 256}
    return random_bert_model(tmp_path_factory, minilm_path, "bert768", **shape)


def test_card_configuration_runs_from_the_hf_cache_with_the_hub_off(
    tmp_path, pubmedqa_dir, tiny_model_dir, bert_768_dir
):
    repo = tiny_repo(tmp_path / "repo", pubmedqa_dir, tiny_model_dir)
    hub = tmp_path / "hf" / "hub"
    lay_out_hub_cache(bert_768_dir, hub, CARD_MODEL)
    # the documented route: -S model=biobert (the card's model, dims and recipe); small batches for 8 documents
    run(["python", "-m", "commands.compose_params", "model=biobert", "batch_size=4", "grad_accum=1", "epochs=1"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert (params["model"]["name"], params["model"]["dims"], params["train"]["profile"]) == (
        CARD_MODEL,
        CARD_DIMS,
        "card",
    )
    offline = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    result = run(["dvc", "repro"], repo, **offline)
    for stage in ("prepare", "baseline", "mine", "train", "evaluate", "export"):
        assert f"Running stage '{stage}'" in result.stdout

    train = json.loads((repo / "metrics/train.json").read_text())
    assert train["optimizer_steps"] >= 1
    assert f"base_model: {CARD_MODEL}" in (repo / "models/finetuned/README.md").read_text()  # its generated card
    result_json = json.loads((repo / "metrics/eval.json").read_text())
    expected = [dim_key(d) for d in CARD_DIMS]
    assert list(result_json["base"]) == expected and list(result_json["finetuned"]) == expected

    # every card dim lines up against the card's published numbers
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "card config"], repo)
    run(["python", "-m", "commands.card"], repo)
    diff = json.loads(run(["dvc", "metrics", "diff", "model-card", "--json"], repo).stdout)
    summary = next(v for k, v in diff.items() if k.endswith("summary.json"))
    compared = [f"{part}{dim_label(d)}" for d in CARD_DIMS for part in ("", "base.", "change.")]
    for key in compared:  # fine-tuned, base and the gain: the card's beside the run's at every dim
        assert summary[key]["old"] is not None and summary[key]["new"] is not None, key
