"""End to end: `dvc repro` in a fresh copy of this repository on a small config, as a user runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from medical_matryoshka.core.dims import dim_label
from tests.repos import TEST_EXPORT_PRECISION, copy_worktree, experiments, run, set_yaml_keys

pytestmark = pytest.mark.slow

MAX_DOCS = 20  # documents per split: the whole pipeline in well under a minute


@pytest.fixture(scope="module")
def clone(tmp_path_factory, pubmedqa_dir) -> Path:
    dest = copy_worktree(tmp_path_factory.mktemp("e2e") / "repo")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    run(["python", "-m", "commands.fetch_raw", "--from", str(pubmedqa_dir)], dest)
    # The small config goes into conf/, since `dvc exp run -S` recomposes params.yaml from conf/.
    set_yaml_keys(dest / "conf/data/pairs.yaml", max_docs=MAX_DOCS)  # pubmedqa.yaml inherits it
    set_yaml_keys(dest / "conf/train/default.yaml", epochs=1, batch_size=16)
    set_yaml_keys(dest / "conf/config.yaml", inference_precision=TEST_EXPORT_PRECISION)
    run(["python", "-m", "commands.compose_params"], dest)
    run(["git", "add", "-A"], dest)
    run([*git, "commit", "-qm", "small config"], dest)
    return dest


@pytest.fixture(scope="module")
def first_repro(clone) -> subprocess.CompletedProcess:
    return run(["dvc", "repro"], clone)


def test_repro_runs_every_stage_offline(clone, first_repro):
    out = first_repro.stdout
    for stage in ("prepare", "baseline", "mine", "train", "evaluate", "export"):
        assert f"Running stage '{stage}'" in out
    data = json.loads((clone / "metrics/data.json").read_text())
    assert data["rows"]["test_docs"] == MAX_DOCS and data["rows"]["train_pairs"] > 0
    base = json.loads((clone / "metrics/baseline.json").read_text())["base"]
    assert list(base) == ["dim_384", "dim_256", "dim_128", "dim_64", "dim_32"]
    for metrics in base.values():
        assert len(metrics) == 15 and 0 < metrics["cosine_ndcg@10"] <= 1
    names = ["dev.json", "lengths.json", "test.json", "train.parquet"]
    assert sorted(p.name for p in (clone / "data/prepared").iterdir()) == names
    shown = first_repro.stdout + first_repro.stderr
    # one line a dev evaluation: the mean over the dims and each dim's
    assert re.search(
        r"step \d+ \(epoch 0\.\d\d\)  dev ndcg@10  mean 0\.\d{4} \|  384 0\.\d{4}  .*  32 0\.\d{4}\n", shown
    )
    assert re.search(r"max_seq_length \d+ \(auto: 95% of the texts fit in \d+ tokens", shown)  # prepare's choice
    assert "training plan, from the data:" in shown and "batches: relevance-aware" in shown
    assert "eval_dev_dim" not in shown  # not the trainer's dictionary of every dev metric
    assert re.search(r"dim_384  0\.\d{4}      0\.\d{4}  [+-]0\.\d{4}  \[[+-]0\.\d{4}, [+-]0\.\d{4}\]\n", shown)
    assert "test queries, paired bootstrap (10,000 resamples): beyond noise, fine-tuned is above its base at" in shown
    assert "test queries are too few to measure fine-tuning" in shown  # this tiny test set: said so
    assert re.search(r"test corpus \(\d+\): encoded in \d+\.\d s", shown)  # named passes, one line each in a log
    assert "\r" not in shown and "it/s]" not in shown  # no redrawn progress bars when output is not a terminal
    assert re.search(r"step 1/\d+  epoch 0\.\d+  loss \d", shown)  # training progress as plain lines
    assert "MLflow run: `mlflow ui --backend-store-uri sqlite:///" in first_repro.stdout
    assert "workflowType=machine_learning&viewStateShareKey=training" in first_repro.stdout


def test_train_and_evaluate_outputs(clone, first_repro):
    card = (clone / "models/finetuned/README.md").read_text()
    assert "MatryoshkaLoss" in card and "### Training Logs" in card and "dev_dim_32_cosine_ndcg@10" in card
    assert "### Training Time" not in card  # wall time would make a folder of the same weights differ
    train_metrics = json.loads((clone / "metrics/train.json").read_text())
    assert "checkpoint_key" not in train_metrics  # a hash is no metric for `dvc metrics diff`: it is in the model
    assert (clone / "models/finetuned/checkpoint_key").is_file()
    from medical_matryoshka.core.sections import TrainConfig, read_section
    from medical_matryoshka.training.arguments import optimizer_steps

    train = json.loads((clone / "metrics/train.json").read_text())
    params = yaml.safe_load((clone / "params.yaml").read_text())
    max_steps = optimizer_steps(train["train_pairs"], read_section(TrainConfig, params))
    assert train["stopped"]["max_steps"] == max_steps >= train["optimizer_steps"] > 0
    curve = train["dev_ndcg@10_curve"]  # evaluated 4 times an epoch, or every step of a shorter one
    assert len(curve) == train["stopped"]["evaluations"] >= 2 and curve[-1]["step"] == train["optimizer_steps"]
    assert train["batches"]["relevance_aware"]["query_to_doc"] == 0
    result = json.loads((clone / "metrics/eval.json").read_text())
    assert set(result) == {"base", "finetuned", "change", "noise"}
    summary = json.loads((clone / "metrics/summary.json").read_text())  # what `dvc exp show` prints
    bounds = result["noise"]["change_95"]
    for dim in ("dim_384", "dim_32"):
        ft, base = result["finetuned"][dim]["cosine_ndcg@10"], result["base"][dim]["cosine_ndcg@10"]
        assert result["change"][dim]["cosine_ndcg@10"] == pytest.approx(ft - base)
        assert bounds[dim]["low"] <= ft - base <= bounds[dim]["high"]  # the observed change lies in its interval
        label = dim_label(dim)
        assert (summary[label], summary["base"][label]) == (round(ft, 4), round(base, 4))
        assert summary["change"][label] == round(ft - base, 4)
    test_set = json.loads((clone / "data/prepared/test.json").read_text())
    assert summary["test_queries"] == result["noise"]["test_queries"] == len(test_set["queries"])
    assert re.fullmatch(r"\d/5 above(, \d/5 below)?", summary["vs_base"])
    frontier = json.loads((clone / "metrics/frontier.json").read_text())
    precisions = params["frontier"]["precisions"]
    assert set(frontier) == {"bytes", "base", "finetuned"}
    assert list(frontier["finetuned"]) == [dim_label(d) for d in sorted(params["model"]["dims"])]
    assert frontier["bytes"]["d0384"] == {"float32": 1536, "int8": 384, "binary": 48, "binary_rescore": 48}
    for dim in ("dim_384", "dim_32"):  # float32 is the evaluation's cosine ranking, from the same encoding
        label = dim_label(dim)
        assert list(frontier["finetuned"][label]) == precisions
        assert frontier["finetuned"][label]["float32"] == pytest.approx(result["finetuned"][dim]["cosine_ndcg@10"])
        assert frontier["base"][label]["float32"] == pytest.approx(result["base"][dim]["cosine_ndcg@10"])
    plots = clone / "plots"
    assert (plots / "ndcg_by_dim.png").stat().st_size > 0
    assert (plots / "frontier.png").stat().st_size > 0
    assert sorted(p.stem for p in (plots / "ndcg_by_dim").iterdir()) == [
        "base",
        "card_base",
        "card_finetuned",
        "finetuned",
    ]
    assert not (clone / ".cache/checkpoints").exists() or not any((clone / ".cache/checkpoints").iterdir())


def test_train_runs_as_two_ddp_processes_under_torchrun(clone, first_repro, tmp_path):
    """-S train.nproc=2: torchrun, gloo on CPU, per-process batch 8 = the single run's 16; rank 0 writes."""
    from mlflow.tracking import MlflowClient

    from medical_matryoshka.core.sections import TrainConfig, read_section
    from medical_matryoshka.training.arguments import optimizer_steps

    ddp = tmp_path / "ddp"
    shutil.copytree(clone, ddp, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    params_file = ddp / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"]["nproc"], params["batch_size"] = 2, 8
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(ddp / "models/finetuned")
    store = f"sqlite:///{tmp_path / 'ddp-mlflow.db'}"
    out = run(["python", "-m", "stages.train"], ddp, MLFLOW_TRACKING_URI=store)
    assert "--nproc_per_node=2" in out.stdout and "over 2 processes" in out.stdout
    run(["python", "-m", "stages.evaluate"], ddp, MLFLOW_TRACKING_URI=store)

    train = json.loads((ddp / "metrics/train.json").read_text())
    n_pairs = train["train_pairs"]
    assert train["processes"] == 2
    max_steps = optimizer_steps(n_pairs, read_section(TrainConfig, params), processes=2)
    assert train["stopped"]["max_steps"] == max_steps >= train["optimizer_steps"] > 0
    assert (ddp / "models/finetuned/model.safetensors").is_file()
    single = json.loads((clone / "metrics/eval.json").read_text())["finetuned"]
    multi = json.loads((ddp / "metrics/eval.json").read_text())["finetuned"]
    for dim in ("dim_384", "dim_32"):  # same recipe, same data, other batch order: close, not identical
        assert multi[dim]["cosine_ndcg@10"] == pytest.approx(single[dim]["cosine_ndcg@10"], abs=0.05)
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("medical-matryoshka").experiment_id])
    assert sorted(r.data.tags["stage"] for r in runs if "mlflow.parentRunId" in r.data.tags) == ["evaluate", "train"]


def test_passage_pairs_train_as_a_second_data_set(clone, first_repro, tmp_path):
    """-S train.passage_pairs=true: one (passage, passage) row per training abstract, batched on its own."""
    import pandas as pd

    from medical_matryoshka.core.sections import TrainConfig, read_section
    from medical_matryoshka.training.arguments import optimizer_steps
    from medical_matryoshka.training.data import passage_pairs

    work = tmp_path / "passages"
    shutil.copytree(clone, work, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    params_file = work / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train"]["passage_pairs"] = True
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(work / "models/finetuned")
    out = run(["python", "-m", "stages.train"], work, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")

    train = json.loads((work / "metrics/train.json").read_text())
    expected = passage_pairs(pd.read_parquet(work / "data/prepared/train.parquet"), params["seed"])
    assert train["passage_pairs"] == len(expected) > 0
    assert f"and {len(expected)} passage pairs" in out.stdout
    sizes = [train["train_pairs"], train["passage_pairs"]]
    cfg = read_section(TrainConfig, params)
    assert train["stopped"]["max_steps"] == optimizer_steps(sizes, cfg) > optimizer_steps(sizes[0], cfg)
    assert (work / "models/finetuned/model.safetensors").is_file()


def test_eval_benchmark_runs_both_routes_and_they_agree(clone, first_repro):
    """docs/performance.md's evaluation benchmark, on the small config: the speed figure is printed, not asserted."""
    out = run(["python", "-m", "benchmarks.eval_speed", "--repeats", "1"], clone).stdout
    assert out.startswith("$ python -m benchmarks.eval_speed --repeats 1\n")
    assert re.search(r"speed-up: [0-9.]+x for 5 dims", out)
    worst = float(re.search(r"largest difference ([0-9.e+-]+)", out).group(1))
    assert worst <= 1e-6


def test_index_benchmark_measures_each_dim_and_precision_against_exact_search(clone, first_repro, tmp_path):
    """docs/deployment.md's index benchmark on a few thousand vectors: exact search is its own reference, an inverted
    file finds at most what exact search finds, and the stored bytes follow the precision."""
    cmd = ["python", "-m", "benchmarks.index_search", "--n", "5000", "--nlist", "64", "--nprobe", "4", "64"]
    out = run([*cmd, "--dims", "384", "32", "--queries", "50", "--out", str(tmp_path / "index.json")], clone).stdout
    assert "synthetic vectors per index" in out
    rows = json.loads((tmp_path / "index.json").read_text())
    assert len(rows) == 2 * 3 * 3  # dims x precisions x (exact + 2 nprobe)
    for row in rows:
        assert 0.0 <= row["recall@10"] <= 1.0 and row["queries_per_s"] > 0
        assert row["recall@10"] == 1.0 or row["index"] != "exact"
    full = {r["index"]: r["recall@10"] for r in rows if r["dim"] == 32 and r["precision"] == "float32"}
    assert full["ivf64,nprobe64"] == 1.0 >= full["ivf64,nprobe4"]  # every list probed is exact search
    exact = {(r["dim"], r["precision"]): r["index_mib"] for r in rows if r["index"] == "exact"}
    assert exact[384, "float32"] / exact[384, "int8"] == pytest.approx(4, rel=0.01)
    assert exact[384, "float32"] / exact[384, "binary"] == pytest.approx(32, rel=0.01)
    bad = run([*cmd, "--dims", "100"], clone, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --dims 100 is not one of the model's Matryoshka dims [384, 256, 128, 64, 32]"


def test_the_frontiers_int8_is_what_a_faiss_sq8_index_retrieves(clone, first_repro):
    out = run(["python", "-m", "benchmarks.int8_faiss"], clone).stdout
    rows = re.findall(r"^\s*(\d+)\s+(0\.\d{4}|1\.0000)\s+(\S+)\s+(\S+)\s+([+-]\d\.\d{4})$", out, re.M)
    assert [int(r[0]) for r in rows] == [384, 256, 128, 64, 32], out
    frontier = json.loads((clone / "metrics/frontier.json").read_text())["finetuned"]
    for dim, _, ours, faiss_ndcg, _ in rows:
        assert float(ours) == pytest.approx(frontier[dim_label(int(dim))]["int8"], abs=5e-5)  # the committed cell
        assert float(ours) == pytest.approx(float(faiss_ndcg), abs=1e-3), out  # a real index agrees


def test_rotation_benchmark_keeps_the_full_dimension(clone, first_repro):
    """The rotation alone: full dimension unchanged (the script checks it), one table row per dim."""
    out = run(["python", "-m", "benchmarks.rotation_only"], clone).stdout
    rows = re.findall(r"^\| (\d+) \| ([0-9.]+) \| ([0-9.]+) \| ([+-][0-9.]+) \| ([0-9.]+) \|$", out, re.M)
    assert [int(r[0]) for r in rows] == [384, 256, 128, 64, 32]
    assert abs(float(rows[0][1]) - float(rows[0][2])) <= 1e-4 and float(rows[0][4]) == 1.0
    assert all(0 < float(r[4]) <= 1 for r in rows)


def test_the_readmes_use_your_model_lines_run_on_the_fine_tuned_model(clone, first_repro):
    readme = (clone / "README.md").read_text()
    code = re.search(r"\*\*Use your model\*\*.*?```python\n(.*?)```", readme, re.S).group(1)
    code += "print(model.encode_document(passages).shape)\n"  # the vectors at the chosen dim
    length = json.loads((clone / "data/prepared/lengths.json").read_text())["max_seq_length"]
    out = run(["python", "-c", code], clone).stdout.splitlines()
    assert out[-2:] == [f"{length} [0]", "(2, 256)"]  # trained length; the claim finds its passage


def test_second_repro_runs_nothing(clone, first_repro):
    out = run(["dvc", "repro"], clone).stdout
    assert "Running stage" not in out
    assert "didn't change, skipping" in out


def test_metrics_diff_against_the_model_card(clone, first_repro):
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "run"], clone)
    run(["python", "-m", "commands.card"], clone)
    diff = json.loads(run(["dvc", "metrics", "diff", "model-card", "--all", "--json"], clone).stdout)
    rows = diff["metrics/baseline.json"]
    card = json.loads((clone / "metrics/model_card.json").read_text())["base"]
    ours = json.loads((clone / "metrics/baseline.json").read_text())["base"]
    for dim in ("dim_256", "dim_128", "dim_64"):  # the dims MiniLM and the card's BioBERT share
        row = rows[f"base.{dim}.cosine_ndcg@10"]
        assert row["old"] == card[dim]["cosine_ndcg@10"] and row["new"] == pytest.approx(ours[dim]["cosine_ndcg@10"])
        assert row["diff"] == pytest.approx(row["new"] - row["old"])
    assert rows["base.dim_768.cosine_ndcg@10"]["old"] == 0.408  # the card's own dims show too
    finetuned = diff["metrics/eval.json"]["finetuned.dim_64.cosine_ndcg@10"]
    assert finetuned["old"] == 0.5312 and finetuned["new"] is not None
    table = run(["dvc", "metrics", "diff", "model-card", "--all"], clone).stdout
    assert "base.dim_128.cosine_ndcg@10" in table and "model-card" in table
    assert all(row["old"] is None for row in diff.get("metrics/train.json", {}).values())  # not the card's
    by_dim = json.loads(
        run(["dvc", "metrics", "diff", "model-card", "--targets", "metrics/summary.json", "--json"], clone).stdout
    )
    assert by_dim["metrics/summary.json"]["d0064"]["old"] == 0.5312
    lines = run(["python", "-m", "commands.card", "diff"], clone).stdout.splitlines()  # NDCG@10 by default
    assert [line.split()[:2] for line in lines[3:-1]] == [["cosine_ndcg@10", d] for d in ("256", "128", "64")]
    assert lines[-1].startswith("(--all: every metric the card published")
    everything = run(["python", "-m", "commands.card", "diff", "--all"], clone).stdout.splitlines()
    assert len(everything) == 1 + 2 + 15 * 3  # title, header, 15 published metrics x 3 dims in common
    assert lines[5].split()[5:7] == ["0.5312", f"{finetuned['new']:.4f}"]  # dim 64 fine-tuned: the card, this run


def test_mlflow_holds_a_parent_with_a_nested_run_per_stage(clone, first_repro):
    from mlflow.tracking import MlflowClient

    from medical_matryoshka.core.stage import StageConfig
    from medical_matryoshka.core.tracking.identity import flatten

    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medical-matryoshka")
    found = client.search_runs([exp.experiment_id])
    parents = [r for r in found if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = {r.data.tags["stage"]: r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"prepare", "baseline", "mine", "train", "evaluate", "export"}
    commit = parent.data.tags["git_commit"]  # the commit `dvc repro` ran on (a later test commits again)
    assert commit in run(["git", "log", "--format=%H"], clone).stdout.split()
    assert parent.info.run_name == f"repro @{commit[:7]} (committed params)"
    assert children["train"].info.run_name == f"{parent.info.run_name} / train"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert {r.info.status for r in found} == {"FINISHED"}  # the parent too, once export (the last) finished
    assert exp.artifact_location == (clone / "mlartifacts").resolve().as_uri()
    assert (
        "loss" in children["train"].data.metrics
        and "eval_dev_dim_32_cosine_ndcg_at_10" in children["train"].data.metrics
    )
    artifacts = [a.path for a in client.list_artifacts(children["evaluate"].info.run_id)]
    assert sorted(artifacts) == ["frontier.png", "ndcg_by_dim.png"]
    assert 0 < children["evaluate"].data.metrics["frontier.finetuned.d0032.binary_rescore"] <= 1
    from medical_matryoshka.core.models import MODEL_TAG, weights_digest

    assert parent.data.tags[MODEL_TAG] == weights_digest(clone / "models/finetuned")  # commands.register finds it
    params = yaml.safe_load((clone / "params.yaml").read_text())
    assert parent.data.params["data.max_docs"] == str(MAX_DOCS) and float(parent.data.params["lr"]) == params["lr"]
    parts = ("ndcg10", "ndcg10_base", "ndcg10_change", "ndcg10_change_ci_high", "ndcg10_change_ci_low")
    summary = {f"{dim_label(dim)}.{part}" for dim in (384, 256, 128, 64, 32) for part in parts}
    summary |= {"share.d0032_of_d0384", "train.minutes", "train.loss"}
    summary |= {f"{dim_label(dim)}.dev_ndcg10" for dim in (384, 256, 128, 64, 32)}
    assert set(parent.data.metrics) == summary  # compact: the full table is on the evaluate run only
    result = json.loads((clone / "metrics/eval.json").read_text())
    assert parent.data.metrics["d0032.ndcg10_base"] == round(result["base"]["dim_32"]["cosine_ndcg@10"], 4)
    tuned = children["evaluate"].data.metrics["finetuned.dim_32.cosine_ndcg_at_10"]  # in full on the stage's run
    assert parent.data.metrics["d0032.ndcg10"] == round(tuned, 4)  # four decimals on the parent, as shown
    bounds = result["noise"]["change_95"]["dim_32"]
    assert parent.data.metrics["d0032.ndcg10_change_ci_low"] == round(bounds["low"], 4)
    curve = client.get_metric_history(parent.info.run_id, "train.loss")
    assert len(curve) == len(client.get_metric_history(children["train"].info.run_id, "loss")) > 1
    assert children["baseline"].data.params["model.dims"] == "[384, 256, 128, 64, 32]"
    for name, child in children.items():  # each stage logs exactly the params dvc.yaml declares for it...
        declared = flatten(StageConfig.load(name, clone / "params.yaml", clone / "dvc.yaml", begin=False).params)
        logged = {k: v for k, v in child.data.params.items() if not k.startswith("chosen.")}
        assert logged == {k: str(v) for k, v in declared.items()}, name
    chosen = {k: v for k, v in children["train"].data.params.items() if k.startswith("chosen.")}
    lengths = json.loads((clone / "data/prepared/lengths.json").read_text())
    assert chosen["chosen.max_seq_length"] == str(lengths["max_seq_length"])  # ...and train what it chose from the data
    assert chosen["chosen.max_seq_length_setting"] == "auto" and int(chosen["chosen.steps_per_epoch"]) > 0
    others = [c for name, c in children.items() if name != "train"]
    assert not any(k.startswith("chosen.") for c in others for k in c.data.params)
    assert "tokens.anchor.mean" in children["prepare"].data.metrics


def test_exp_run_overrides_compose_as_typed(clone, first_repro):
    run(["dvc", "exp", "run", "-S", "lr=3e-5"], clone)
    (params,) = experiments(clone).values()
    committed = yaml.safe_load(run(["git", "show", "HEAD:params.yaml"], clone).stdout)
    assert params["lr"] == pytest.approx(3e-5) != committed["lr"]
    assert {k: v for k, v in params.items() if k != "lr"} == {k: v for k, v in committed.items() if k != "lr"}
    offline = run(["dvc", "exp", "run", "-S", "model=biobert"], clone, check=False, HF_HUB_OFFLINE="1")
    assert offline.returncode != 0
    assert "error: cannot load model 'pritamdeka/BioBERT-mnli-snli-scinli-scitail-mednli-stsb'" in offline.stderr
    assert "Traceback" not in offline.stderr


@pytest.mark.parametrize(
    ("overrides", "profile", "model", "mining"),
    [
        (["train=card"], "card", "all-MiniLM-L6-v2", False),
        (["model=biobert"], "card", "BioBERT-mnli-snli-scinli-scitail-mednli-stsb", False),
        (["model=biobert", "train=default"], "default", "BioBERT-mnli-snli-scinli-scitail-mednli-stsb", True),
        (["mining.enabled=false"], "default", "all-MiniLM-L6-v2", False),
    ],
)
def test_documented_overrides_compose_through_dvc(clone, tmp_path, overrides, profile, model, mining):
    """What `dvc exp run -S ...` composes (DVC's own Hydra call), read back from a queued experiment."""
    work = tmp_path / "queue"
    run(["git", "clone", "-q", str(clone), str(work)], tmp_path)
    run(["dvc", "exp", "run", "--queue", *(f"-S{o}" for o in overrides)], work)
    (params,) = experiments(work).values()
    assert (params["train"]["profile"], params["model"]["name"].split("/")[-1]) == (profile, model)
    assert params["mining"]["enabled"] is mining
    from medical_matryoshka.compose import compose

    compose(tmp_path / "expected.yaml", overrides, conf_dir=work / "conf")  # commands.compose_params' route
    assert params == yaml.safe_load((tmp_path / "expected.yaml").read_text())


def test_corrupt_raw_file_stops_repro_with_one_line_and_no_output(clone, first_repro):
    run(["git", "checkout", "params.yaml"], clone)  # the committed small config (a failed exp run leaves its params)
    raw = clone / "data/raw/pubmedqa/ori_pqal.json"
    original = raw.read_bytes()
    try:
        raw.write_bytes(original[:-10])
        result = run(["dvc", "repro", "prepare"], clone, check=False)
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "corrupt" in errors[0] and "fetch_raw" in errors[0]
        assert "Traceback" not in result.stderr
        assert not (clone / "data/prepared").exists()
        assert not list((clone / "data").glob(".prepared.*"))
    finally:
        raw.write_bytes(original)


def test_export_writes_a_verified_cpu_model(clone, first_repro):
    """The export stage's folder encodes as the fine-tuned model does, and its metrics say by how much."""
    from sentence_transformers import SentenceTransformer

    from medical_matryoshka.serving.encoder import ExportedEncoder
    from medical_matryoshka.serving.verify import cosine_distance

    params = yaml.safe_load((clone / "params.yaml").read_text())
    report = json.loads((clone / "metrics/export.json").read_text())
    limit = params["export"]["max_cosine_distance"][params["export"]["weights"]]
    assert report["agreement"]["texts"] > 0
    for measure in ("max_cosine_distance", "alone_vs_batched_max_cosine_distance", "padded_max_cosine_distance"):
        assert 0 <= report["agreement"][measure] <= limit
    frontier = json.loads((clone / "metrics/frontier.json").read_text())["finetuned"]
    assert report["torch"] == frontier and list(report["exported"]) == list(frontier)
    for dim, row in report["exported"].items():
        assert row["float32"] - frontier[dim]["float32"] >= -params["export"]["max_ndcg_loss"]
        assert report["change"][dim]["int8"] == pytest.approx(row["int8"] - frontier[dim]["int8"])
    texts = ["Aspirin lowers the risk of a second myocardial infarction.", "Statins."]
    ours = ExportedEncoder(clone / "models/exported", truncate_dim=32).encode(texts)
    torch_model = SentenceTransformer(str(clone / "models/finetuned"), device="cpu", truncate_dim=32)
    assert cosine_distance(ours, torch_model.encode(texts, normalize_embeddings=True)).max() <= limit
    assert "exported models/exported: openvino float (f32 on this CPU)" in first_repro.stdout
