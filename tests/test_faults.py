"""The fault battery: bad inputs, a dead tracking server and kills, met through `dvc repro` on a tiny config.

Each case asserts what the README's "Bad input" and "Interrupted training" sections promise: the exit, one
`error:` line and no traceback, and that the documented command brings back the last good outputs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commands.screenshots import free_port
from tests.test_pipeline_e2e import run, tiny_repo

pytestmark = pytest.mark.slow

OUTSIDE = f"/tmp/medmat-{os.getpid()}-outside-pairs.jsonl"
RESTORE = "git checkout HEAD -- params.yaml dvc.lock metrics/ plots/ data/raw/ && dvc checkout"  # the README's line
ROWS = [
    {"claim": f"claim {i} on aspirin and outcome {i % 3}", "passage": f"passage {i}: trial {i * 7}"} for i in range(40)
]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, pubmedqa_dir, tiny_model_dir) -> Path:
    """The tiny pipeline, run and committed with its results: the last good state every case returns to."""
    dest = tiny_repo(tmp_path_factory.mktemp("faults") / "repo", pubmedqa_dir, tiny_model_dir)
    run(["dvc", "repro"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], dest)
    return dest


def restore_and_check(repo: Path) -> None:
    """The README's restore line brings back the committed outputs; DVC then has nothing to run."""
    subprocess.run(["bash", "-c", RESTORE], cwd=repo, check=True, capture_output=True)
    status = run(["dvc", "status"], repo).stdout
    assert "up to date" in status, status
    assert run(["git", "status", "--porcelain"], repo).stdout == ""
    assert (repo / "models/finetuned/modules.json").is_file()


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stdout + result.stderr
    return errors[0]


# (id, overrides composed into params.yaml, raw files to write, the error line)
CASES = [
    ("seed", ["seed=-1"], {}, r"seed must be in \[0, 2\*\*32\)"),
    ("lr", ["lr=1e10"], {}, r"lr must be in \(0, 1\) .* got 1e\+10"),
    ("weights", ["train.matryoshka_weights=[1,-1,1]"], {}, "train.matryoshka_weights must be >= 0"),
    ("ndcg", ["eval.ndcg_at_k=[5]"], {}, "eval.ndcg_at_k must have 10 as its largest cut-off"),
    ("precision", ["frontier.precisions=[float32,int4]"], {}, r"frontier.precisions: unknown precision \['int4'\]"),
    ("unknown key", ["+lrr=1", "seed=7"], {}, "unknown key 'lrr'"),  # seed reruns prepare, which checks all
    ("not a model", ["model.name=data/raw/notamodel"], {"notamodel/readme.txt": b"hi"}, "is a folder but not a model"),
    ("empty mining", ["data.max_docs=1"], {}, "mining kept none of the"),
    ("0-byte file", ["data=pairs", "data.path=data/raw/mine.jsonl"], {"mine.jsonl": b""}, r"is empty \(0 bytes\)"),
    (
        "not UTF-8",
        ["data=pairs", "data.path=data/raw/mine.jsonl"],
        {"mine.jsonl": jsonl(ROWS) + '{"anchor": "caf\xe9", "positive": "p"}\n'.encode("latin-1")},
        r"is not UTF-8 text \(byte 0xe9 on line 41\)",
    ),
    (
        "not text",
        ["data=pairs", "data.path=data/raw/mine.jsonl", "data.columns.anchor=claim", "data.columns.positive=passage"],
        {"mine.jsonl": jsonl([*ROWS, {"claim": ["a", "list"], "passage": 5}])},
        r"row 41: column 'claim' holds .*not text",
    ),
    (
        "outside data/raw",  # an existing file: DVC hashes it as an external dependency, prepare refuses it
        ["data=pairs", f"data.path={OUTSIDE}"],
        {OUTSIDE: jsonl(ROWS)},
        rf"is outside data/raw/.*cp {OUTSIDE} data/raw/{Path(OUTSIDE).name}",
    ),
    (
        "qrels id",
        ["data=beir", "data.path=data/raw/beir"],
        {
            "beir/corpus.jsonl": b'{"_id": "p1", "text": "t"}\n',
            "beir/queries.jsonl": b'{"_id": "q1", "text": "c"}\n',
            "beir/qrels/train.tsv": b"q1\tp1\t1\n",
            "beir/qrels/test.tsv": b"q1\tp2\t1\n",
        },
        r"qrels/test.tsv names 1 corpus-id\(s\) absent from corpus.jsonl, e.g. 'p2'; add them",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("overrides", "files", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_the_last_results_come_back(repo, overrides, files, message):
    for name, content in files.items():  # names are under data/raw/, or absolute
        (repo / "data/raw" / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "data/raw" / name).write_bytes(content)
    try:
        run(["python", "-m", "commands.compose_params", *overrides], repo)  # what `dvc exp run -S` writes
        result = run(["dvc", "repro"], repo, check=False)
        assert result.returncode == 255  # dvc's own code; the stage exits 2
        assert re.search(message, one_error_line(result)), one_error_line(result)
        assert "exited with 2" in result.stderr
    finally:
        for name in files:
            written = name if Path(name).is_absolute() else repo / "data/raw" / Path(name).parts[0]
            subprocess.run(["rm", "-rf", str(written)], check=True)
    restore_and_check(repo)


def test_corrupt_raw_file_is_one_line_and_restorable(repo):
    raw = repo / "data/raw/pubmedqa/ori_pqal.json"
    raw.write_bytes(raw.read_bytes()[:-10])
    result = run(["dvc", "repro"], repo, check=False)
    assert result.returncode == 255 and "corrupt" in one_error_line(result)
    assert " M data/raw/pubmedqa.dvc" in run(["git", "status", "--porcelain"], repo).stdout  # dvc recorded the hash
    restore_and_check(repo)  # `dvc status` hashes the raw file again: up to date means the good file is back


def test_an_unreachable_tracking_server_stops_before_any_work_or_is_skipped(repo):
    dead = f"http://127.0.0.1:{free_port()}"
    result = run(["dvc", "repro", "-s", "-f", "evaluate"], repo, check=False, MLFLOW_TRACKING_URI=dead)
    assert result.returncode == 255
    assert one_error_line(result).startswith(f"error: MLflow tracking server {dead} is unreachable")
    restore_and_check(repo)
    run(["python", "-m", "commands.compose_params", "tracking.unreachable=skip"], repo)
    result = run(["dvc", "repro", "-s", "-f", "evaluate"], repo, MLFLOW_TRACKING_URI=dead)
    assert "this stage runs without tracking (tracking.unreachable=skip)" in result.stderr
    assert run(["git", "diff", "--stat", "metrics/eval.json"], repo).stdout == ""  # the same result, untracked
    restore_and_check(repo)


def trainers_in(repo: Path, module: str = "stages.train") -> list[int]:
    """Pids of `module` processes (a stage) working in `repo`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if f"-m {module}" in cmdline and Path(os.readlink(proc / "cwd")) == repo:
                found.append(int(proc.name))
        except (OSError, ValueError):
            continue
    return found


def mlflow_runs(repo: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    exp = client.get_experiment_by_name("medical-matryoshka")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])


def test_sigterm_to_dvc_stops_a_scoring_stage_too(repo):
    run(["python", "-m", "commands.compose_params", "eval.batch_size=1"], repo)  # baseline reruns, slowly
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    log = repo.parent / "sigterm-baseline.log"
    with log.open("w") as out:
        dvc = subprocess.Popen(["dvc", "repro", "baseline"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while "Loading weights" not in log.read_text() and time.monotonic() < deadline:  # main() is running
        time.sleep(0.02)
    stage = trainers_in(repo, "stages.baseline")
    assert stage, "baseline did not start"
    for pid in stage:  # held, so it cannot finish on its own before the kill lands
        os.kill(pid, signal.SIGSTOP)
    dvc.send_signal(signal.SIGTERM)
    dvc.wait(timeout=60)
    for pid in stage:
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while trainers_in(repo, "stages.baseline") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert trainers_in(repo, "stages.baseline") == []
    # dvc removed the stage's outputs before running it; an orphan would have scored on and written them
    assert not (repo / "metrics/baseline.json").exists()
    restore_and_check(repo)


def test_sigterm_to_dvc_stops_the_trainer_and_a_torn_checkpoint_does_not_block(repo):
    run(["python", "-m", "commands.compose_params", "epochs=100"], repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    log = repo.parent / "sigterm.log"
    with log.open("w") as out:
        dvc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while (
        time.monotonic() < deadline
        and len(list(repo.glob(".cache/checkpoints/*/checkpoint-*/checkpoint_complete.json"))) < 2
    ):
        time.sleep(0.2)
    trainers = trainers_in(repo)
    assert trainers, "training did not start"
    for pid in trainers:  # hold training where it is: on a loaded machine it could finish before the kill lands
        os.kill(pid, signal.SIGSTOP)
    dvc.send_signal(signal.SIGTERM)  # `kill <dvc pid>`
    dvc.wait(timeout=60)
    for pid in trainers:  # the SIGTERM dvc's death sent the trainer is delivered now
        os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while trainers_in(repo) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert trainers_in(repo) == []  # the trainer did not outlive dvc
    killed = next(r for r in mlflow_runs(repo) if r.data.tags.get("stage") == "train")
    assert killed.info.status in ("KILLED", "RUNNING")  # KILLED by the stage itself, else by the next stage's sweep

    # a kill in the middle of writing the newest checkpoint: it lacks its completion mark
    checkpoints = sorted(repo.glob(".cache/checkpoints/*/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    (checkpoints[-1] / "checkpoint_complete.json").unlink(missing_ok=True)  # the stop may have torn it
    result = run(["dvc", "repro"], repo)
    assert f"removed {checkpoints[-1].relative_to(repo)}: an interrupted run left it half written" in result.stdout
    assert f"resuming from {checkpoints[-2].relative_to(repo)}" in result.stdout
    assert not list(repo.glob(".cache/checkpoints/*"))  # removed after the successful run
    assert json.loads((repo / "metrics/train.json").read_text())["resumed_from_step"] > 0
    runs = {r.info.run_id: r for r in mlflow_runs(repo)}
    assert runs[killed.info.run_id].info.status == "KILLED"
    statuses = {r.data.tags.get("stage"): r.info.status for r in list(runs.values())[:2]}
    assert statuses == {"train": "FINISHED", "evaluate": "FINISHED"}
    assert runs[killed.data.tags["mlflow.parentRunId"]].info.status == "FINISHED"  # the same params, now complete
    restore_and_check(repo)
