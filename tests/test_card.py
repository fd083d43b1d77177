"""The model card's numbers: metrics/model_card.json matches the card, and the git ref DVC diffs against."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from medical_matryoshka.card import card_views, parse_card, write_card_ref
from medical_matryoshka.core.sections import EvalConfig, PathsConfig, read_section
from medical_matryoshka.retrieval.scoring import RetrievalSet, score_all_dims
from tests.conftest import REPO

CARD_README = REPO.parent / "shared/model_card/README.md"
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
CARD_JSON = PARAMS["paths"]["card"]  # the card's numbers live where params.yaml says


def test_model_card_json_holds_the_cards_tables():
    card = json.loads((REPO / CARD_JSON).read_text())
    if CARD_README.is_file():  # the published card sits beside the repository on our machines and CI
        assert card == parse_card(CARD_README.read_text(encoding="utf-8"))
    assert list(card["base"]) == ["dim_768", "dim_512", "dim_256", "dim_128", "dim_64"]
    assert card["base"]["dim_768"]["cosine_ndcg@10"] == 0.408
    assert card["finetuned"]["dim_768"]["cosine_ndcg@10"] == 0.5345
    assert all(len(metrics) == 15 for part in card.values() for metrics in part.values())


def test_card_uses_the_pipelines_metric_names():
    from tests.fakes import FixedEmbeddings

    card = json.loads((REPO / CARD_JSON).read_text())
    model = FixedEmbeddings(queries={"q": [1.0, 0.0]}, corpus={"c": [1.0, 0.0], "d": [0.0, 1.0]})
    rs = RetrievalSet({"q": "q"}, {"c": "c", "d": "d"}, {"q": {"c"}})
    ours = score_all_dims(model, rs, (2,), read_section(EvalConfig, PARAMS, "eval"))
    assert list(ours["dim_2"]) == list(card["base"]["dim_768"])  # same names, same order


def test_parse_card_reads_base_then_finetuned_tables():
    text = "\n".join(
        [
            "* Dataset: `dim_64`",
            "| cosine_ndcg@10 | 0.1 |",
            "| **cosine_mrr@10** | **0.2** |",
            "* Dataset: `dim_64`",
            "| cosine_ndcg@10 | 0.3 |",
        ]
    )
    assert parse_card(text) == {
        "base": {"dim_64": {"cosine_ndcg@10": 0.1, "cosine_mrr@10": 0.2}},
        "finetuned": {"dim_64": {"cosine_ndcg@10": 0.3}},
    }


def test_card_ref_holds_the_card_at_the_pipeline_metrics_paths(tmp_path, monkeypatch):
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/train.json").write_text('{"train_loss": 1.0}\n')  # this run's: not the card's
    git("add", "dvc.yaml", "metrics")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.chdir(tmp_path)
    card = json.loads((REPO / CARD_JSON).read_text())
    paths = read_section(PathsConfig, PARAMS, "paths")
    write_card_ref(card_views(card, paths, "cosine_ndcg@10"))
    shown = json.loads(git("show", "model-card:metrics/baseline.json").stdout)
    assert shown == {"base": card["base"]}
    both = json.loads(git("show", "model-card:metrics/eval.json").stdout)
    assert both["finetuned"] == card["finetuned"]
    assert both["change"]["dim_768"]["cosine_ndcg@10"] == pytest.approx(0.5345 - 0.408)
    summary = json.loads(git("show", "model-card:metrics/summary.json").stdout)
    assert summary["d0064"] == card["finetuned"]["dim_64"]["cosine_ndcg@10"]
    assert summary["base"]["d0064"] == card["base"]["dim_64"]["cosine_ndcg@10"]
    assert summary["change"]["d0768"] == pytest.approx(0.5345 - 0.408)  # the card's own gain, beside the run's
    assert sorted(summary) == ["base", "change", "d0064", "d0128", "d0256", "d0512", "d0768"]
    assert git("ls-tree", "-r", "--name-only", "model-card").stdout.split() == [
        "dvc.yaml",
        "metrics/baseline.json",
        "metrics/eval.json",
        "metrics/summary.json",
    ]  # HEAD's tree less what the card has no numbers for, plus the card
    assert git("status", "--porcelain").stdout == ""  # index and work tree untouched


def test_card_diff_prints_only_what_the_card_published():
    from medical_matryoshka.card import card_diff

    card = json.loads((REPO / CARD_JSON).read_text())
    run = {part: {"dim_256": dict(card[part]["dim_256"]), "dim_32": {"cosine_ndcg@10": 0.5}} for part in card}
    run["finetuned"]["dim_256"]["cosine_ndcg@10"] += 0.01
    lines = card_diff(card, run, ("ndcg@10",))
    assert len(lines) == 3  # two header lines, one metric at the one common dimension
    card_value = card["finetuned"]["dim_256"]["cosine_ndcg@10"]
    assert lines[2].split() == [
        "cosine_ndcg@10", "256",
        *(f"{v:.4f}" for v in (card["base"]["dim_256"]["cosine_ndcg@10"],) * 2), "+0.0000",
        f"{card_value:.4f}", f"{card_value + 0.01:.4f}", "+0.0100",
    ]  # fmt: skip
    assert len(card_diff(card, run)) == 2 + 15  # all 15 published metrics
    own = card_diff(card, run, ("ndcg@10",), own_gains=True)  # other data: each model's own gain, never run - card
    card_base = card["base"]["dim_256"]["cosine_ndcg@10"]
    assert own[2].split() == [
        "cosine_ndcg@10", "256",
        f"{card_base:.4f}", f"{card_value:.4f}", f"{card_value - card_base:+.4f}",
        f"{card_base:.4f}", f"{card_value + 0.01:.4f}", f"{card_value + 0.01 - card_base:+.4f}",
    ]  # fmt: skip


def test_card_ref_needs_a_commit(tmp_path, monkeypatch):
    from medical_matryoshka.core.errors import PipelineError

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError, match="no commit yet"):
        write_card_ref({"metrics/baseline.json": {}})
