"""A team's setup on real parts: PostgreSQL started here on 127.0.0.1, an MLflow tracking server on it that
serves the artifacts, two search workers in two clones (standing in for two machines) sharing one Optuna study
in the same PostgreSQL, experiments pushed through a bare git remote and a local DVC remote and pulled into a
third clone, which sees every trial and registers a model from one.

PostgreSQL is Debian's `postgresql` (`.ci/run` installs it). Where it cannot start, the tests skip and say
why, except when MM_REQUIRE_POSTGRES=1 (set by `.ci/run`): then that is a failure, so CI never skips them.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.team.server import DATABASES, USER, start, stop
from tests.repos import experiments, run, tiny_repo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def team():
    # /var/tmp, not pytest's 0700 folder: as root, PostgreSQL runs as `postgres`, which must reach its data
    base = Path(tempfile.mkdtemp(prefix="mm-team-", dir="/var/tmp"))
    base.chmod(0o755)
    try:
        server = start(base / "server")
    except PipelineError as err:
        shutil.rmtree(base, ignore_errors=True)
        if os.environ.get("MM_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL cannot start here: {err}")
    yield server
    stop(base / "server")
    shutil.rmtree(base, ignore_errors=True)


def team_env(server) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": server.tracking_uri,
        "OPTUNA_STORAGE": server.database_url("optuna"),
        "PGPASSFILE": str(server.passfile),
    }


def test_the_server_is_loopback_only_password_protected_and_serves_artifacts(team, tmp_path, monkeypatch):
    import psycopg
    from mlflow import MlflowClient

    assert stat.S_IMODE(team.passfile.stat().st_mode) == 0o600
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host="127.0.0.1", port=team.pg_port, user=USER, dbname="mlflow", connect_timeout=5)
    monkeypatch.setenv("PGPASSFILE", str(team.passfile))
    with psycopg.connect(host="127.0.0.1", port=team.pg_port, user=USER, dbname="postgres") as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert {r[0] for r in conn.execute("SELECT datname FROM pg_database")} >= set(DATABASES)
    assert start(Path(team.folder)) == team  # a running server is left as it is
    line = run([sys.executable, "-m", "commands.team_server", "env", team.folder], Path.cwd()).stdout
    assert f"export MLFLOW_TRACKING_URI={team.tracking_uri}" in line and "password" not in line.lower()

    client = MlflowClient(tracking_uri=team.tracking_uri)
    exp = client.create_experiment(f"artifacts-{os.getpid()}")
    run_id = client.create_run(exp).info.run_id
    (tmp_path / "plot.txt").write_text("a plot")
    client.log_artifact(run_id, str(tmp_path / "plot.txt"))
    uri = client.get_run(run_id).info.artifact_uri
    assert uri.startswith("mlflow-artifacts:")  # through the server: the client needs no shared folder
    assert list(Path(team.folder, "artifacts").rglob("plot.txt"))
    assert Path(client.download_artifacts(run_id, "plot.txt", str(tmp_path / "got"))).read_text() == "a plot"

    stop(Path(team.folder))  # stopped (a reboot, say) and started again: the same addresses, the runs kept
    assert not psycopg_answers(team.pg_port, team.passfile)
    again = start(Path(team.folder))
    assert (again.pg_port, again.tracking_uri) == (team.pg_port, team.tracking_uri)
    assert MlflowClient(tracking_uri=again.tracking_uri).get_run(run_id).info.artifact_uri == uri


def test_as_root_a_folder_postgres_cannot_reach_is_one_line_and_nothing_is_made(team, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("PostgreSQL runs as the user itself when not started by root: nothing to refuse")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(PipelineError, match=r"the `postgres` user cannot enter /\S* \(mode 700\)"):
        start(locked / "server")
    assert list(locked.iterdir()) == []


def psycopg_answers(port: int, passfile: Path) -> bool:
    import psycopg

    try:
        psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres", passfile=str(passfile)).close()
        return True
    except psycopg.OperationalError:
        return False


SPACE = {
    "study": f"team-{os.getpid()}",
    "trials": 4,
    "objectives": ["full", "smallest"],
    "space": {
        "lr": {"type": "float", "low": 1.0e-5, "high": 1.0e-3, "log": True},
        "epochs": {"type": "int", "low": 1, "high": 2},
    },
    "sampler": {"type": "tpe", "startup_trials": 4},
}


def test_two_workers_share_one_study_and_a_third_clone_sees_every_trial(
    team, tmp_path_factory, pubmedqa_dir, tiny_model_dir, monkeypatch
):
    import optuna
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("team")
    origin, store = root / "origin.git", root / "dvc-store"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], root)
    a = tiny_repo(root / "a", pubmedqa_dir, tiny_model_dir)
    (a / "conf/search.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    run(["dvc", "remote", "add", "-d", "team", str(store)], a)
    run(["git", "add", "-A"], a)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "team remote and search"], a)
    run(["git", "remote", "add", "origin", str(origin)], a)
    run(["git", "push", "-q", "origin", "HEAD:main"], a)
    run(["dvc", "repro", "prepare"], a)  # the raw data into DVC's cache (as any first run does) ...
    run(["dvc", "push"], a)  # ... and into the team's remote, for the other clones
    b = root / "b"
    run(["git", "clone", "-q", str(origin), str(b)], root)
    run(["dvc", "pull", "data/raw/pubmedqa.dvc"], b)  # the committed dvc.lock's outputs were never pushed

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env.update(team_env(team), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    workers = {}
    for clone in (a, b):
        log = (root / f"worker-{clone.name}.log").open("w")
        workers[clone] = subprocess.Popen(
            [sys.executable, "-m", "commands.search", "--push", "origin"],
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    for clone, proc in workers.items():
        assert proc.wait(timeout=1500) == 0, (root / f"worker-{clone.name}.log").read_text()[-3000:]
    for clone in (a, b):
        out = (root / f"worker-{clone.name}.log").read_text()
        assert "Pareto front" in out and "best at d0064" in out and "best at d0016" in out, out[-3000:]

    for key, value in team_env(team).items():  # this process reads the study as a member would after `eval env`
        monkeypatch.setenv(key, value)
    study = optuna.load_study(study_name=SPACE["study"], storage=os.environ["OPTUNA_STORAGE"])
    trials = study.get_trials()
    assert len(trials) == SPACE["trials"] and {t.state.name for t in trials} == {"COMPLETE"}
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)  # every trial distinct
    names = {t.user_attrs["experiment"] for t in trials}
    ran = {clone: set(experiments(clone)) & names for clone in (a, b)}
    assert ran[a] and ran[b] and ran[a] | ran[b] == names and not ran[a] & ran[b]  # both took trials

    client = MlflowClient(tracking_uri=team.tracking_uri)
    exp = client.get_experiment_by_name("medical-matryoshka")
    parents = client.search_runs([exp.experiment_id], filter_string=f"tags.`search.study` = '{SPACE['study']}'")
    assert sorted(int(p.data.tags["search.trial"]) for p in parents) == [t.number for t in trials]
    for parent in parents:
        assert parent.info.status == "FINISHED" and parent.data.tags["search.state"] == "COMPLETE"
        assert {"d0064.ndcg10", "d0016.ndcg10"} <= set(parent.data.metrics)
        children = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        )
        assert {"train", "evaluate", "export"} <= {c.data.tags["stage"] for c in children}
        evaluate = next(c for c in children if c.data.tags["stage"] == "evaluate")
        assert client.list_artifacts(evaluate.info.run_id)  # its plots, through the server

    # A third person: a fresh clone pulls every experiment, takes one from the front, gets its model
    c = root / "c"
    run(["git", "clone", "-q", str(origin), str(c)], root)
    run(["dvc", "exp", "pull", "origin"], c)
    shown = experiments(c)
    assert names <= set(shown)
    pick = max(trials, key=lambda t: t.values[0]).user_attrs["experiment"]
    assert float(shown[pick]["lr"]) == pytest.approx(
        next(t for t in trials if t.user_attrs["experiment"] == pick).params["lr"]
    )
    run(["dvc", "exp", "apply", pick], c)
    run(["dvc", "pull"], c)
    assert (c / "models/finetuned/modules.json").is_file()
    summary = json.loads((c / "metrics/summary.json").read_text())
    assert summary["d0064"] == pytest.approx(max(t.values[0] for t in trials), abs=1e-4)
    assert "card" in run([sys.executable, "-m", "commands.card", "diff"], c).stdout
    registered = run(
        [sys.executable, "-m", "commands.register", "--dim", "16", "--name", SPACE["study"]], c, **team_env(team)
    )
    assert f"registered models:/{SPACE['study']}/1" in registered.stdout
