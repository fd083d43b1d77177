"""python -m commands.search: the search space read from conf/search.yaml and checked against params.yaml, the
objectives read from metrics/summary.json, the Pareto front report; and on the tiny pipeline (slow), a failed
trial and a pruned one, each marked so in the study and in MLflow while the search goes on."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.params import load_params
from medical_matryoshka.team.search import TrialFailed, objective_keys, report, shown_url
from medical_matryoshka.team.space import SPACE_FILE, check_knobs, objective_dim, parse_space
from tests.conftest import REPO
from tests.repos import experiments, run, tiny_repo


def committed_space() -> dict:
    return yaml.safe_load((REPO / SPACE_FILE).read_text())


def test_the_committed_space_names_real_knobs():
    space = parse_space(committed_space())
    check_knobs(space, load_params(REPO / "params.yaml"), REPO / "conf")
    assert {k.name for k in space.knobs} >= {"lr", "epochs", "batch_size", "train.matryoshka_weights"}
    weights = next(k for k in space.knobs if k.name == "train.matryoshka_weights")
    assert weights.choices[1] == "[1,1,1,1,2]"  # a list choice is the text `-S` takes
    dims = load_params(REPO / "params.yaml")["model"]["dims"]
    assert all(c is None or len(yaml.safe_load(c)) == len(dims) for c in weights.choices)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"space": {"lrr": {"type": "float", "low": 1e-5, "high": 1e-4}}}, "space.lrr is not a key of params.yaml"),
        ({"space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-5}}}, "space.lr: a float knob needs low < high"),
        (
            {"space": {"lr": {"type": "float", "low": 0.0, "high": 1e-4, "log": True}}},
            "log-uniform range needs low > 0",
        ),
        ({"space": {"lr": {"type": "gauss"}}}, "space.lr: needs type: float | int | categorical"),
        ({"space": {"train": {"type": "categorical", "choices": ["card", "nope"]}}}, "config group takes categorical"),
        ({"objectives": ["full", "full"]}, "objectives repeat"),
        ({"objectives": ["best"]}, "objectives must be one or two of full, smallest"),
        ({"study": "my study"}, "study must be a name"),
        ({"trials": 0}, "trials must be a positive integer"),
        ({"sampler": {"type": "grid"}}, "sampler.type must be one of tpe, nsga2, random"),
        ({"colour": "red"}, "unknown key(s) ['colour']"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_key(change, message):
    data = {**copy.deepcopy(committed_space()), **change}
    with pytest.raises(PipelineError, match=None) as err:
        check_knobs(parse_space(data), load_params(REPO / "params.yaml"), REPO / "conf")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_config_group_is_a_knob_too():
    data = {**committed_space(), "space": {"train": {"type": "categorical", "choices": ["card", "default"]}}}
    check_knobs(parse_space(data), load_params(REPO / "params.yaml"), REPO / "conf")


def test_full_and_smallest_are_the_largest_and_smallest_dims_of_the_summary():
    space = parse_space({**committed_space(), "objectives": ["full", "smallest"]})
    summary = {"d0032": 0.7, "d0384": 0.9, "d0128": 0.8}
    assert objective_keys(space, summary) == ["d0384", "d0032"]
    assert objective_keys(parse_space({**committed_space(), "objectives": ["d0128"]}), summary) == ["d0128"]
    assert [objective_dim(o, [384, 128, 32]) for o in ("full", "smallest", "d0128")] == [384, 32, 128]
    with pytest.raises(TrialFailed, match="no d0064"):
        objective_keys(parse_space({**committed_space(), "objectives": ["d0064"]}), summary)


def test_the_report_is_the_pareto_front_and_the_best_trial_per_objective():
    import optuna
    from optuna.distributions import FloatDistribution

    space = parse_space({**committed_space(), "space": {"lr": {"type": "float", "low": 1e-5, "high": 1e-3}}})
    study = optuna.create_study(directions=["maximize", "maximize"])
    results = {1e-5: (0.90, 0.70), 3e-5: (0.88, 0.78), 1e-4: (0.85, 0.75), 3e-4: (0.80, 0.60)}
    for i, (lr, values) in enumerate(results.items()):
        study.add_trial(optuna.trial.create_trial(
            params={"lr": lr}, distributions={"lr": FloatDistribution(1e-5, 1e-3)}, values=list(values),
            user_attrs={"experiment": f"recipes-{i:03d}", "objective_keys": ["d0384", "d0032"]},
        ))  # fmt: skip
    text = report(study, space)
    front = text.split("Pareto front")[1].split("best at")[0]
    assert "recipes-000" in front and "recipes-001" in front  # each best at one dim
    assert "recipes-002" not in front and "recipes-003" not in front  # beaten at both by recipes-001
    assert "best at d0384: trial 0 (recipes-000, 0.9000)" in text
    assert "best at d0032: trial 1 (recipes-001, 0.7800)" in text
    assert "4 trials (4 complete)" in text


def test_a_study_with_other_objectives_or_none_is_one_line(tmp_path):
    from medical_matryoshka.team.search import load_study

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with pytest.raises(PipelineError, match="no study 'recipes' in .*; a worker creates it when it starts"):
        load_study(parse_space(committed_space()), url, create=False)
    assert len(load_study(parse_space(committed_space()), url).directions) == 2
    with pytest.raises(PipelineError, match="has 2 objective.* names 1 \\(full\\); name another study"):
        load_study(parse_space({**committed_space(), "objectives": ["full"]}), url)


def test_a_trial_that_finished_before_the_stop_is_complete_and_the_worker_stops_after_it(tmp_path, monkeypatch):
    """SIGTERM arriving once the trial's `dvc exp run` has exited 0: the study records its result (COMPLETE, as
    MLflow's FINISHED runs say) and asks for no further trial, instead of marking a finished trial FAIL."""
    import optuna

    from medical_matryoshka.core.errors import Interrupted
    from medical_matryoshka.team import search

    space = parse_space({**committed_space(), "objectives": ["full"], "trials": 5})
    worker = search.Worker(space, tmp_path, "metrics/summary.json", dev_metric=str, client=None)
    monkeypatch.setattr(worker, "command", lambda trial, values: [sys.executable, "-c", "pass"])  # exits 0

    def signal_after_the_run(trial, proc, name):
        proc.wait()
        raise Interrupted(signal.SIGTERM)  # the handler's raise, as the stop lands after dvc's exit

    monkeypatch.setattr(worker, "_watch", signal_after_the_run)
    monkeypatch.setattr(search, "experiment_commit", lambda name, repo: "abc123")
    monkeypatch.setattr(search, "git", lambda *args, cwd=None: '{"d0384": 0.91, "d0032": 0.7}')
    study = optuna.create_study(direction="maximize")
    study.optimize(worker, n_trials=5)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]  # and no trial after it
    assert study.trials[0].value == 0.91 and study.trials[0].user_attrs["commit"] == "abc123"
    assert worker.interrupted.signum == signal.SIGTERM and worker.finished_before_stop

    def signal_mid_run(trial, proc, name):
        raise Interrupted(signal.SIGTERM)  # dvc still running: stopped, the trial FAIL

    monkeypatch.setattr(worker, "command", lambda trial, values: [sys.executable, "-c", "import time; time.sleep(30)"])
    monkeypatch.setattr(worker, "_watch", signal_mid_run)
    # A worker started with SIGINT ignored (`python -m commands.search &` in a script) must still stop its
    # trial with SIGINT: the ignore is not passed on to the trial, which would run on to a finish.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(KeyboardInterrupt):
            optuna.create_study(direction="maximize").optimize(worker, n_trials=1)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_trial_stopped_between_stages_ends_its_parent_run_killed(tmp_path):
    """Pruned (or stopped) after one stage finished and before the next began, no stage is left to end the
    trial's MLflow parent: the worker ends it KILLED, and leaves a finished or failed parent as it is."""
    from types import SimpleNamespace

    from medical_matryoshka.team import search

    class Store:  # the few MlflowClient calls the worker makes, over one parent run per experiment name
        def __init__(self, status):
            self.status, self.ended = status, []

        def get_experiment_by_name(self, name):
            return SimpleNamespace(experiment_id="1")

        def search_runs(self, ids, filter_string):
            return [SimpleNamespace(info=SimpleNamespace(run_id="p1"), data=SimpleNamespace(tags={}))]

        def get_run(self, run_id):
            return SimpleNamespace(info=SimpleNamespace(status=self.status))

        def set_terminated(self, run_id, status):
            self.ended.append((run_id, status))

    space = parse_space({**committed_space(), "objectives": ["full"], "trials": 1})
    for status, ended in [("SCHEDULED", [("p1", "KILLED")]), ("RUNNING", [("p1", "KILLED")]),
                          ("FINISHED", []), ("FAILED", [])]:  # fmt: skip
        store = Store(status)
        search.Worker(space, tmp_path, "metrics/summary.json", dev_metric=str, client=store)._end_stopped("t-000")
        assert store.ended == ended, status


def test_a_storage_url_is_shown_without_its_password():
    assert shown_url("postgresql+psycopg://bob:s3cret@db:5432/optuna") == "postgresql+psycopg://bob:***@db:5432/optuna"
    assert shown_url("postgresql+psycopg://bob@db/optuna") == "postgresql+psycopg://bob@db/optuna"


def test_a_bad_space_file_stops_the_command_with_one_line(tmp_path):
    bad = tmp_path / "search.yaml"
    bad.write_text(yaml.safe_dump({**committed_space(), "space": {"lrr": {"type": "float", "low": 1, "high": 2}}}))
    result = subprocess.run(
        [sys.executable, "-m", "commands.search", "--space", str(bad), "--storage", f"sqlite:///{tmp_path}/o.db"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {bad}: space.lrr is not a key of params.yaml nor a config group in conf/ (DVC would rerun nothing "
        "and every trial would score the baseline); use a -S key as `dvc exp run` takes it, e.g. lr or "
        "train.matryoshka_weights"
    ]
    assert not (tmp_path / "o.db").exists()  # stopped before it opened the study


@pytest.mark.slow
def test_a_failed_and_a_pruned_trial_are_marked_and_the_search_goes_on(tmp_path, pubmedqa_dir, tiny_model_dir):
    import optuna
    from mlflow import MlflowClient

    repo = tiny_repo(tmp_path / "repo", pubmedqa_dir, tiny_model_dir)
    space = {
        "study": "local",
        "trials": 2,
        "objectives": ["full"],
        "space": {
            "epochs": {"type": "int", "low": 1, "high": 100},
            "batch_size": {"type": "categorical", "choices": [1, 4]},
        },
        "pruner": {"type": "threshold", "lower": 2.0},  # NDCG@10 is never 2: pruned at its first dev evaluation
        "fixed": ["train.patience=null"],  # no early stop: the 100-epoch trial is still training when pruned
    }  # fmt: skip
    (repo / SPACE_FILE).write_text(yaml.safe_dump(space))
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "search space"], repo)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="local", storage=storage, direction="maximize")
    study.enqueue_trial({"epochs": 1, "batch_size": 1})  # in-batch negatives need 2: prepare refuses the params
    study.enqueue_trial({"epochs": 100, "batch_size": 4})
    result = run([sys.executable, "-m", "commands.search", "--storage", storage], repo)
    trials = optuna.load_study(study_name="local", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "PRUNED"], result.stdout
    assert "batch_size must be" in trials[0].user_attrs["error"] and trials[0].user_attrs["error"].count("\n") == 0
    assert "trial 1: pruned" in result.stdout and "no trial has completed yet" in result.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medical-matryoshka")
    parents = {
        p.data.tags["search.trial"]: p
        for p in client.search_runs([exp.experiment_id], filter_string="tags.`search.study` = 'local'")
    }
    assert "0" not in parents  # refused by params.yaml's check before any stage opened a run: nothing to mark
    assert parents["1"].info.status == "KILLED" and parents["1"].data.tags["search.state"] == "PRUNED"
    assert not {"local-000", "local-001"} & set(experiments(repo))  # DVC records only finished recipes
    assert run(["git", "status", "--porcelain"], repo).stdout == ""  # --temp: the workspace is untouched

    # A worker stopped mid-trial (`kill <pid>`): one line, its trial FAIL in the study, its runs KILLED in MLflow.
    # The trial cannot finish before the signal, however fast the machine: 100,000 epochs, no early stop.
    third = {**space, "trials": 3, "pruner": {"type": "none"}}
    third["space"] = {**space["space"], "epochs": {"type": "int", "low": 1, "high": 100_000}}
    (repo / SPACE_FILE).write_text(yaml.safe_dump(third))
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "one more trial"], repo)
    study.enqueue_trial({"epochs": 100_000, "batch_size": 4})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "commands.search", "--storage", storage], cwd=repo, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not any(
        r.data.tags.get("stage") == "train" and r.info.status == "RUNNING"
        for r in client.search_runs([exp.experiment_id], filter_string="tags.dvc_exp_name = 'local-002'")
    ):
        assert time.monotonic() < deadline and worker.poll() is None, "the third trial did not start training"
        time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 128 + signal.SIGTERM
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: stopped by SIGTERM; trial 2 is marked FAIL in the study and its MLflow runs KILLED; start the worker "
        "again to go on with the study"
    ]
    assert optuna.load_study(study_name="local", storage=storage).trials[2].state.name == "FAIL"
    runs = client.search_runs([exp.experiment_id], filter_string="tags.dvc_exp_name = 'local-002'")
    assert runs and {r.info.status for r in runs if r.data.tags.get("stage") in ("train", None)} == {"KILLED"}
