"""The fault battery: bad inputs, a dead tracking server and kills, met through `dvc repro` on a tiny config.

Each case asserts what docs/configuration.md "Bad input" and docs/how-it-works.md "Interrupted training"
promise: the exit, one `error:` line and no traceback, and that the documented command brings back the last
good outputs.
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

from medical_matryoshka.team.server import free_port
from tests.repos import run, tiny_repo

pytestmark = pytest.mark.slow

OUTSIDE = f"/tmp/medmat-{os.getpid()}-outside-pairs.jsonl"
RESTORE = "git checkout HEAD -- params.yaml dvc.lock metrics/ plots/ data/raw/ && dvc checkout"  # as documented
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
    """docs/configuration.md's restore line brings back the committed outputs; DVC then has nothing to run."""
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
    (
        "weights",
        ["train.matryoshka_weights=[1,-1,1]"],
        {},
        "train.matryoshka_weights must be null or a list of numbers >= 0",
    ),
    ("ndcg", ["eval.ndcg_at_k=[5]"], {}, "eval.ndcg_at_k must have 10 as its largest cut-off"),
    ("precision", ["frontier.precisions=[float32,int4]"], {}, r"frontier.precisions must be .*\['float32', 'int4'\]"),
    ("unknown key", ["+lrr=1", "seed=7"], {}, r"unknown key 'lrr'.*`dvc checkout` restores"),  # seed reruns prepare
    ("weights/dims", ["train.matryoshka_weights=[1,1]"], {}, r"matryoshka_weights has 2 values for 3 dims"),
    ("fp16 on CPU", ["train.precision=fp16"], {}, r"train.precision=fp16 needs a CUDA GPU"),
    (
        "3 pairs",  # mining off: nothing to mine from, and a test split far too small to measure
        ["data=pairs", "data.path=data/raw/mine.jsonl", "mining.enabled=false"],
        {"mine.jsonl": jsonl([{"anchor": f"claim {i}", "positive": f"passage {i}"} for i in range(3)])},
        r"the test split has 1 claim\(s\) over 3 passage\(s\), 3 claim\(s\) in all: too few to measure retrieval at "
        r"top-10; it needs more than 10 passages to search \(add passages\) and at least 2 test claims \(with "
        r"data.test_fraction 0.2 that takes 6 claims or more in all, or a larger data.test_fraction\)",
    ),
    (
        "empty cells",
        ["data=pairs", "data.path=data/raw/mine.jsonl", "data.columns.anchor=claim", "data.columns.positive=passage"],
        {
            "mine.jsonl": jsonl(
                [*ROWS[:3], {"claim": "c", "passage": " "}, *ROWS[3:30], {"claim": None, "passage": "p"}]
            )
        },
        r"mine.jsonl: 2 row\(s\) have an empty 'claim' or 'passage' cell: rows 4 \(passage\), 32 \(claim\)",
    ),
    (
        "a file without the pairs profile",  # -S data.path=... alone: the default profile reads PubMedQA's folder
        ["data.path=data/raw/my_qa.jsonl"],
        {"my_qa.jsonl": jsonl(ROWS)},
        r"data.path data/raw/my_qa.jsonl is a file, but the data profile is pubmedqa .* -S data=pairs -S "
        r"data.path=data/raw/my_qa.jsonl",
    ),
    (
        "a broken csv",  # semicolons, one line with a stray one: the message names the delimiter it read with
        ["data=pairs", "data.path=data/raw/mine.csv", "data.columns.anchor=claim", "data.columns.positive=passage"],
        {"mine.csv": ("claim;passage\n" + "".join(f"c {i}, x;p {i}, y\n" for i in range(30)) + "a;b;c;d\n").encode()},
        r"cannot read data/raw/mine.csv as csv with semicolon delimiters \(sniffed\): .*data.csv_sep",
    ),
    (
        "a length the model cannot read",
        ["model.max_seq_length=1000"],
        {},
        r"model.max_seq_length 1000 is more than .* can read \(128 tokens, its position embeddings\); use at most "
        r"128, or -S model.max_seq_length=auto",
    ),
    (
        "duplicate column",
        ["data=pairs", "data.path=data/raw/mine.csv"],
        {"mine.csv": b"anchor,positive,positive\na,b,c\n"},
        "its header names column 'positive' more than once",
    ),
    (
        "bad jsonl line",
        ["data=pairs", "data.path=data/raw/mine.jsonl"],
        {"mine.jsonl": jsonl(ROWS) + b"{oops\n"},
        r"mine.jsonl line 41 is not valid JSON",
    ),  # fmt: skip
    ("not a model", ["model.name=data/raw/notamodel"], {"notamodel/readme.txt": b"hi"}, "is a folder but not a model"),
    ("empty mining", ["data.max_docs=2"], {}, "mining kept none of the"),
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
        since = time.time() * 1000
        result = run(["dvc", "repro"], repo, check=False)
        assert result.returncode == 255  # dvc's own code; the stage exits 2
        line = one_error_line(result)
        assert re.search(message, line), line
        assert "exited with 2" in result.stderr
        assert_runs_true(repo, since, line)
    finally:
        for name in files:
            written = name if Path(name).is_absolute() else repo / "data/raw" / Path(name).parts[0]
            subprocess.run(["rm", "-rf", str(written)], check=True)
    restore_and_check(repo)


def open_runs(repo: Path) -> list[str]:
    return [
        f"{r.info.run_name}: {r.info.status}" for r in mlflow_runs(repo) if r.info.status in ("RUNNING", "SCHEDULED")
    ]


def assert_runs_true(repo: Path, since: float, line: str) -> None:
    """After a failed `dvc repro`: no run is left RUNNING or SCHEDULED, and a stage that had opened its run
    ended FAILED with the error line the terminal showed."""
    assert open_runs(repo) == []
    started = [r for r in mlflow_runs(repo) if r.info.start_time >= since and "stage" in r.data.tags]
    if started:  # the stage failed after its start (not while reading params.yaml)
        failed = started[0]
        assert failed.info.status == "FAILED" and f"error: {failed.data.tags['error']}" == line
        assert (
            next(r for r in mlflow_runs(repo) if r.info.run_id == failed.data.tags["mlflow.parentRunId"]).info.status
            == "FAILED"
        )


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
    # Held as soon as it watches dvc, well before it writes: on the tiny test set scoring takes a fraction of a
    # second, less than it takes to see its MLflow run open (CI once saw the stage finish inside that window).
    stage = wait_for_watch(repo, "stages.baseline")
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
    run(["python", "-m", "commands.compose_params", "epochs=100", "train.patience=null"], repo)
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

    # the newest checkpoint is damaged: complete when written, then it lost a file (or the stop tore it)
    checkpoints = sorted(repo.glob(".cache/checkpoints/*/checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    (checkpoints[-1] / "trainer_state.json").unlink(missing_ok=True)
    result = run(["dvc", "repro"], repo)
    newest = checkpoints[-1].relative_to(repo)
    assert (
        f"set aside {newest} as damaged-{newest.name}: it is damaged (trainer_state.json is missing)" in result.stdout
        or f"removed {newest}: an interrupted run left it half written" in result.stdout  # the stop tore it
    ), result.stdout
    assert f"resuming from {checkpoints[-2].relative_to(repo)}" in result.stdout
    assert not list(repo.glob(".cache/checkpoints/*"))  # removed after the successful run
    assert json.loads((repo / "metrics/train.json").read_text())["resumed_from_step"] > 0
    runs = {r.info.run_id: r for r in mlflow_runs(repo)}
    assert runs[killed.info.run_id].info.status == "KILLED"
    statuses = {r.data.tags.get("stage"): r.info.status for r in list(runs.values())[:3]}
    assert statuses == {"train": "FINISHED", "evaluate": "FINISHED", "export": "FINISHED"}
    assert runs[killed.data.tags["mlflow.parentRunId"]].info.status == "FINISHED"  # the same params, now complete
    restore_and_check(repo)


def test_a_killed_own_data_training_resumes_to_the_model_an_unbroken_run_makes(repo):
    """A pairs file (many-to-many claims and passages): its first `dvc repro` killed in `train` after the first
    checkpoint, then `dvc repro` again, resumes there and ends with the model the same run makes unbroken."""
    from sentence_transformers import SentenceTransformer

    from tests.conftest import many_to_many_rows

    (repo / "data/raw/own.jsonl").write_bytes(jsonl(many_to_many_rows() * 1 + ROWS))
    own = ["data=pairs", "data.path=data/raw/own.jsonl", "data.columns.anchor=claim", "data.columns.positive=passage"]
    run(["python", "-m", "commands.compose_params", *own, "epochs=3", "train.patience=null"], repo)
    texts = [r["claim"] for r in ROWS[:4]] + [r["passage"] for r in ROWS[:4]]
    pattern = ".cache/checkpoints/*/checkpoint-*/checkpoint_complete.json"
    earlier = set(repo.glob(pattern))  # other cases' killed runs leave theirs (kept for resuming)
    try:
        log = repo.parent / "own-kill.log"
        with log.open("w") as out:
            dvc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not set(repo.glob(pattern)) - earlier:
            assert dvc.poll() is None, log.read_text()
            time.sleep(0.1)
        trainers = trainers_in(repo)
        for pid in trainers:  # held after its first checkpoint, so it cannot finish before the kill lands
            os.kill(pid, signal.SIGSTOP)
        dvc.send_signal(signal.SIGTERM)
        dvc.wait(timeout=60)
        for pid in trainers:
            os.kill(pid, signal.SIGCONT)
        assert trainers and dvc.returncode != 0 and not (repo / "models/finetuned").exists()

        result = run(["dvc", "repro"], repo)
        assert "resuming from .cache/checkpoints/" in result.stdout, result.stdout
        train = json.loads((repo / "metrics/train.json").read_text())
        resumed = SentenceTransformer(str(repo / "models/finetuned"), device="cpu").encode(texts)

        run(["dvc", "repro", "-f", "-s", "train"], repo)  # the same run unbroken (a finished run's checkpoints go)
        unbroken = json.loads((repo / "metrics/train.json").read_text())
        assert "resumed_from_step" not in unbroken or not unbroken["resumed_from_step"]
        assert 0 < train["resumed_from_step"] < train["optimizer_steps"] == unbroken["optimizer_steps"]
        expected = SentenceTransformer(str(repo / "models/finetuned"), device="cpu").encode(texts)
        assert abs(resumed - expected).max() < 1e-4  # the same model, whether or not it was killed on the way
    finally:
        (repo / "data/raw/own.jsonl").unlink(missing_ok=True)
    restore_and_check(repo)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def wait_for_watch(repo: Path, module: str, timeout: float = 300) -> list[int]:
    """Pids of the `module` stage's processes (its shell too) as soon as the stage watches its launcher: from
    die_with_parent() on, it holds a pidfd (lifetime._watch), so a kill of dvc after this must stop it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = trainers_in(repo, module)
        for pid in pids:
            try:
                links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
            except OSError:  # exiting, or an fd closed while listed: look again
                continue
            if "anon_inode:[pidfd]" in links:
                return pids
        time.sleep(0.005)
    raise AssertionError(f"{module} did not start watching its launcher")


def wait_for_running(repo: Path, stage: str, timeout: float = 300) -> None:
    """Until `stage` has read params.yaml and opened its MLflow run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(r.data.tags.get("stage") == stage and r.info.status == "RUNNING" for r in mlflow_runs(repo)):
                return
        except Exception:  # noqa: BLE001 - the store is being written by the stage: look again
            pass
        time.sleep(0.05)
    raise AssertionError(f"{stage} did not start")


def run_cache_entries(repo: Path, cmd: str) -> list[dict]:
    """DVC's run cache entries (.dvc/cache/runs) of the stage whose command is `cmd`."""
    import yaml

    found = []
    for entry in (repo / ".dvc/cache/runs").rglob("*"):
        if entry.is_file():
            data = yaml.safe_load(entry.read_text())
            if isinstance(data, dict) and data.get("cmd") == cmd:
                found.append(data)
    return found


def test_params_swapped_under_a_running_stage_are_never_recorded(repo):
    """Case 1 of the round-three faults: `dvc exp run -S lr=...` refused while `dvc repro` trains has already
    rewritten params.yaml; the trainer must not let DVC record the new lr beside the model it trained."""
    import yaml

    committed_lock = yaml.safe_load((repo / "dvc.lock").read_text())
    run(["python", "-m", "commands.compose_params", "lr=4e-5"], repo)
    log = repo.parent / "swap.log"
    with log.open("w") as out:
        dvc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    wait_for_running(repo, "train")
    trainers = trainers_in(repo)
    for pid in trainers:  # hold it while the second command runs, as a long training would be
        os.kill(pid, signal.SIGSTOP)
    try:
        refused = run(["dvc", "exp", "run", "-S", "lr=2e-5"], repo, check=False)
    finally:
        for pid in trainers:
            os.kill(pid, signal.SIGCONT)
    dvc.wait(timeout=600)
    assert refused.returncode != 0, refused.stdout + refused.stderr  # DVC's own refusal...
    assert yaml.safe_load((repo / "params.yaml").read_text())["lr"] == 2e-5  # ...after it rewrote params.yaml
    output = log.read_text()
    assert dvc.returncode != 0
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and errors[0].startswith(
        "error: params.yaml changed while stage 'train' ran (lr 4e-05 -> 2e-05;"
    ), output
    assert "Traceback" not in output
    assert not (repo / "models/finetuned").exists()  # removed, as DVC had left it: nothing unrecorded stays
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["train"] == committed_lock["stages"]["train"]  # nothing recorded for this run
    assert not [
        e for e in run_cache_entries(repo, "python -m stages.train") if e["params"]["params.yaml"]["lr"] == 2e-5
    ]
    assert "train" in run(["dvc", "status"], repo).stdout  # not "up to date": DVC knows train must run
    train = next(r for r in mlflow_runs(repo) if r.data.tags.get("stage") == "train")
    assert train.info.status == "FAILED" and "params.yaml changed" in train.data.tags["error"]
    assert open_runs(repo) == []
    restore_and_check(repo)


def test_kill_9_then_a_rerun_leave_true_run_states_and_a_finished_parent_stays_finished(repo):
    run(["python", "-m", "commands.compose_params", "mining.range_max=4"], repo)  # mine, train, evaluate rerun
    log = repo.parent / "kill9.log"
    with log.open("w") as out:
        dvc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)
    wait_for_running(repo, "mine")
    for pid in trainers_in(repo, "stages.mine"):
        os.kill(pid, signal.SIGKILL)
    dvc.wait(timeout=120)
    assert dvc.returncode != 0
    killed = next(r for r in mlflow_runs(repo) if r.data.tags.get("stage") == "mine")
    rerun = run(["dvc", "repro"], repo)  # the sweep ends the orphan, the rerun goes on with the same parent
    runs = {r.info.run_id: r for r in mlflow_runs(repo)}
    assert runs[killed.info.run_id].info.status == "KILLED"
    parent = runs[killed.data.tags["mlflow.parentRunId"]]
    remine = next(r for r in mlflow_runs(repo) if r.data.tags.get("stage") == "mine")
    assert remine.info.status == "FINISHED" and remine.data.tags["mlflow.parentRunId"] == parent.info.run_id
    if "Stage 'train' didn't change, skipping" in rerun.stdout:  # the same pairs: DVC skips train and evaluate
        assert parent.info.status == "SCHEDULED"  # until the next stage to start sweeps it (its dvc is gone)
    else:
        assert parent.info.status == "FINISHED"

    run(["dvc", "repro", "-f", "-s", "export"], repo)  # the same params again: a new parent (export is the last)
    runs = {r.info.run_id: r for r in mlflow_runs(repo)}
    assert runs[parent.info.run_id].info.status == "FINISHED"  # swept, or finished by its export
    finished_at = runs[parent.info.run_id].info.end_time
    again = next(r for r in mlflow_runs(repo) if "mlflow.parentRunId" not in r.data.tags)
    assert again.info.run_name == f"{parent.info.run_name} (run 2)" and again.info.status == "FINISHED"
    assert open_runs(repo) == []
    run(["dvc", "repro", "-f", "-s", "export"], repo)
    assert {r.info.run_id: r for r in mlflow_runs(repo)}[
        parent.info.run_id
    ].info.end_time == finished_at  # never reopened
    restore_and_check(repo)


def in_small_disk(folder: str, size_kib: int, command: str) -> str:
    """`command` with `folder` of the repository on a tmpfs of `size_kib` (a user namespace: no root needed)."""
    return (
        f"unshare --user --map-root-user --mount sh -c 'mkdir -p {folder} && "
        f"mount -t tmpfs -o size={size_kib}k tmpfs {folder} && {command}'"
    )


def test_a_full_disk_is_one_line_and_leaves_no_torn_checkpoint(repo, tiny_model_dir):
    run(["python", "-m", "commands.compose_params", "epochs=2"], repo)
    model_bytes = sum(p.stat().st_size for p in tiny_model_dir.rglob("*") if p.is_file())
    weights = (tiny_model_dir / "model.safetensors").stat().st_size
    checkpoint = model_bytes + 2 * weights  # the model and AdamW's two moments
    size = int(1.5 * checkpoint / 1024)  # room for the first epoch's checkpoint, not for the second's
    listing = repo.parent / "disk-full-listing.txt"
    cmd = in_small_disk(".cache/checkpoints", size, f"dvc repro; ls -R .cache/checkpoints > {listing}")
    result = subprocess.run(["bash", "-c", cmd], cwd=repo, env=clean_env(), capture_output=True, text=True)
    line = one_error_line(result)
    assert re.match(
        r"error: no space left on the device holding \.cache/checkpoints/\w+ \([\d,]+ MiB free; it needs about "
        r"[\d,]+ MiB there\); .*training resumes from the last complete checkpoint$",
        line,
    ), line
    folders = re.findall(r"/(checkpoint-\d+):$", listing.read_text(), flags=re.M)
    assert len(folders) == 1, listing.read_text()  # the first epoch's; the second's, torn, was removed
    assert "checkpoint_complete.json" in listing.read_text()
    assert open_runs(repo) == []

    cmd = in_small_disk("models", 64, "dvc repro")  # the model's folder: stopped before training
    result = subprocess.run(["bash", "-c", cmd], cwd=repo, env=clean_env(), capture_output=True, text=True)
    line = one_error_line(result)
    assert re.match(r"error: no space left on the device holding models \(0 MiB free; it needs about", line), line
    assert "training plan" not in result.stdout  # stopped before it planned, let alone trained
    restore_and_check(repo)


def test_a_killed_queued_run_ends_killed_and_the_documented_line_clears_it(repo):
    run(["dvc", "exp", "run", "--queue", "-S", "lr=1e-5", "-S", "epochs=40", "-S", "train.patience=null"], repo)
    # not `run`: the worker it starts inherits captured pipes, and reading them would wait for the worker's end
    subprocess.run(["dvc", "queue", "start", "-j", "1"], cwd=repo, env=clean_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_running(repo, "train")  # queued runs track into the repository's store (DVC_ROOT)
        name = next(
            line.split()[1] for line in run(["dvc", "queue", "status"], repo).stdout.splitlines() if "Running" in line
        )
        run(["dvc", "queue", "kill", name], repo)
        deadline = time.monotonic() + 120
        while "Failed" not in (status := run(["dvc", "queue", "status"], repo).stdout) and time.monotonic() < deadline:
            time.sleep(2)
        assert f"{name}" in status and "Failed" in status, status
        logs = run(["dvc", "queue", "logs", name], repo, check=False).stdout
        assert "Traceback" not in logs and "error: stopped by SIGINT" in logs, logs[-2000:]
        assert name in run(["dvc", "exp", "show", "--csv"], repo).stdout  # DVC keeps listing it...
        train = next(r for r in mlflow_runs(repo) if r.data.tags.get("stage") == "train")
        assert train.info.status == "KILLED" and "dvc_exp_name" in train.data.tags
        assert open_runs(repo) == []
        run(["dvc", "queue", "remove", "--failed"], repo)  # ...until the documented line removes it
        assert name not in run(["dvc", "queue", "status"], repo).stdout
        assert name not in run(["dvc", "exp", "show", "--csv"], repo).stdout
    finally:
        run(["dvc", "queue", "stop", "--kill"], repo, check=False)
    restore_and_check(repo)
