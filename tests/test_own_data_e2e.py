"""End to end on own data: `dvc repro` on a BEIR folder and `dvc exp run -S data=pairs ...` on many-to-many
pairs with given negatives, in a checkout that never fetched PubMedQA (MiniLM, whose scores let the mining
guards pass, on a few dozen texts: seconds a stage)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import beir_qrels, many_to_many_rows, passage, write_beir
from tests.repos import TEST_EXPORT_PRECISION, copy_worktree, run, set_yaml_keys

pytestmark = pytest.mark.slow
STAGES = ("prepare", "baseline", "mine", "train", "evaluate", "export")
# a given negative for every other row of the pairs file; mining fills the rest
GIVEN = {(r["claim"], r["passage"]): passage(40 + i) for i, r in enumerate(many_to_many_rows()) if i % 2}


@pytest.fixture(scope="module")
def own_repo(tmp_path_factory) -> Path:
    """This repository with a BEIR folder as its data, short texts and one short epoch, committed; PubMedQA
    never fetched."""
    dest = copy_worktree(tmp_path_factory.mktemp("own") / "repo")
    cfg = dest / "conf/config.yaml"
    cfg.write_text(cfg.read_text().replace("- data: pubmedqa", "- data: beir"))
    set_yaml_keys(cfg, inference_precision=TEST_EXPORT_PRECISION)
    set_yaml_keys(dest / "conf/model/minilm.yaml", max_seq_length=64)
    set_yaml_keys(dest / "conf/mining/default.yaml", range_max=5)
    set_yaml_keys(dest / "conf/train/default.yaml", epochs=1, batch_size=4, matryoshka_weights="null")
    write_beir(dest / "data/raw/beir", beir_qrels(), n_passages=30, n_queries=16)
    rows = [{**row, "negative": GIVEN.get((row["claim"], row["passage"]))} for row in many_to_many_rows()]
    pd.DataFrame(rows).to_json(dest / "data/raw/pairs.jsonl", orient="records", lines=True)
    run(["python", "-m", "commands.compose_params"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "own data"], dest)
    return dest


def test_repro_on_a_beir_folder_needs_no_pubmedqa(own_repo):
    result = run(["dvc", "repro"], own_repo)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    assert not (own_repo / "data/raw/pubmedqa").exists()
    assert "1 test passage(s) are also train/dev positives: allowed over a shared corpus" in result.stdout
    data = json.loads((own_repo / "metrics/data.json").read_text())
    assert data["split"]["test"] == "official" and data["split"]["shared_test_passages"] == 1
    assert data["rows"]["corpus_passages"] == 30 and data["rows"]["test_docs"] == 4
    test = json.loads((own_repo / "data/prepared/test.json").read_text())
    assert len(test["corpus"]) == 30 and test["relevant"]["q12"] == ["p1", "p14"]  # the whole corpus searched
    result = json.loads((own_repo / "metrics/eval.json").read_text())
    assert list(result["finetuned"]) == ["dim_384", "dim_256", "dim_128", "dim_64", "dim_32"]
    assert 0 <= result["finetuned"]["dim_32"]["cosine_ndcg@10"] <= 1
    assert "Running stage" not in run(["dvc", "repro"], own_repo).stdout  # and nothing reruns
    diff = run(["python", "-m", "commands.card", "diff"], own_repo).stdout.splitlines()
    assert diff[0].startswith("the card (metrics/model_card.json) is another model on other data")
    assert "on data/raw/beir" in diff[0] and diff[2].split()[2:] == ["base", "tuned", "gain"] * 2


def test_exp_run_on_many_to_many_pairs_with_given_negatives(own_repo):
    overrides = ["data=pairs", "data.columns.anchor=claim", "data.columns.positive=passage"]
    overrides.append("data.columns.negative=negative")
    result = run(["dvc", "exp", "run", *(f"-S{o}" for o in overrides)], own_repo)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in result.stdout
    assert "split: test component, dev component (10 components" in result.stdout
    assert re.search(
        r"\n\d+ training pairs from \d+ claims; dev \d+ and test \d+ claims over 30 corpus passages\n", result.stdout
    )
    data = json.loads((own_repo / "metrics/data.json").read_text())
    assert data["source"] == {"rows_read": 51, "rows_collapsed": 1}
    assert data["rows"]["corpus_passages"] == 30 and data["split"]["shared_test_passages"] == 0
    assert data["negatives"]["given"] > 0 and data["negatives"]["false_negatives_dropped"] == 0
    mining = json.loads((own_repo / "metrics/mining.json").read_text())
    assert mining["given_negatives_used"] > 0 and mining["mined_negatives"] > 0
    pairs = pd.read_parquet(own_repo / "data/pairs/train.parquet")
    assert list(pairs.columns) == ["anchor", "positive", "negative_1"]
    expected = [GIVEN.get((a, p)) for a, p in zip(pairs["anchor"], pairs["positive"], strict=True)]
    assert any(expected) and not all(expected)
    for negative, given in zip(pairs["negative_1"], expected, strict=True):
        assert negative == given or given is None  # the given negative where there is one, else a mined one


def test_long_passages_set_the_length_and_prepare_says_what_it_cuts(own_repo):
    """Passages of about 300 MiniLM tokens: auto reads them at MiniLM's own 256 and says so; the fixed 64 this
    repository's profile sets is one warning line with the fix, and every later stage reads the same length."""
    from tests.conftest import claim

    rows = [{"claim": claim(i), "passage": " ".join(passage(i + k) for k in range(10))} for i in range(30)]
    pd.DataFrame(rows).to_json(own_repo / "data/raw/long.jsonl", orient="records", lines=True)
    own = ["data=pairs", "data.path=data/raw/long.jsonl", "data.columns.anchor=claim", "data.columns.positive=passage"]
    try:
        run(["python", "-m", "commands.compose_params", *own, "model.max_seq_length=auto"], own_repo)
        result = run(["dvc", "repro", "prepare"], own_repo)
        lengths = json.loads((own_repo / "data/prepared/lengths.json").read_text())
        assert (lengths["setting"], lengths["max_seq_length"], lengths["passages"]["share_cut"]) == ("auto", 256, 1.0)
        assert 280 < lengths["passages"]["p50"] < 400
        line = next(line for line in result.stdout.splitlines() if line.startswith("max_seq_length"))
        assert line.startswith("max_seq_length 256 (auto: 95% of the texts fit in ") and "capped at the model's" in line
        assert json.loads((own_repo / "metrics/data.json").read_text())["lengths"] == lengths

        run(["python", "-m", "commands.compose_params", *own], own_repo)  # the repository's fixed 64
        result = run(["dvc", "repro", "prepare"], own_repo)
        assert "warning: model.max_seq_length 64 cuts 100% of the passages" in result.stdout
        assert "-S model.max_seq_length=auto reads them at 256" in result.stdout
        stage = run(["python", "-c", "from medical_matryoshka.core.stage import StageConfig; "
                     "print(StageConfig.load('evaluate', begin=False).model().max_seq_length)"], own_repo)  # fmt: skip
        assert stage.stdout.strip() == "64"  # what every later stage loads the model with
    finally:
        (own_repo / "data/raw/long.jsonl").unlink()
        run(["git", "checkout", "--", "params.yaml", "dvc.lock", "metrics/"], own_repo)


def test_a_queued_experiment_on_own_data_runs_once_the_data_is_dvc_added(own_repo):
    """docs/own-data.md: queued experiments run in a temporary copy holding what git and DVC track, so the
    pairs file is `dvc add`ed (and its .dvc file committed) first; then `dvc queue start` runs it to the end."""
    import subprocess
    import time

    from tests.repos import experiments

    rows = many_to_many_rows()
    pd.DataFrame(rows).to_json(own_repo / "data/raw/queued.jsonl", orient="records", lines=True)
    run(["dvc", "add", "data/raw/queued.jsonl"], own_repo)
    run(["git", "add", "data/raw/queued.jsonl.dvc", "data/raw/.gitignore"], own_repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "queued pairs"], own_repo)
    own = [
        "data=pairs",
        "data.path=data/raw/queued.jsonl",
        "data.columns.anchor=claim",
        "data.columns.positive=passage",
    ]
    run(["dvc", "exp", "run", "--queue", "-n", "queued-own", *(f"-S{o}" for o in own)], own_repo)

    subprocess.run(["dvc", "queue", "start", "-j", "1"], cwd=own_repo, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = run(["dvc", "queue", "status"], own_repo).stdout
            if "Success" in status or "Failed" in status:
                break
            time.sleep(3)
        assert "Success" in status, status + run(["dvc", "queue", "logs", "queued-own"], own_repo, check=False).stdout
        assert experiments(own_repo)["queued-own"]["data"]["path"] == "data/raw/queued.jsonl"
    finally:
        run(["dvc", "queue", "stop", "--kill"], own_repo, check=False)
