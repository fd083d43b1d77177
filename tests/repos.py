"""Test helpers: copies of this repository to run the pipeline in, and the commands run there."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

# On 8-20 test queries one pair that bf16 reorders is 0.05-0.125 of NDCG@10, past export.max_ndcg_loss: the
# pipeline tests export in float32 arithmetic (the bf16 default is checked against torch in test_export, and
# on the PubMedQA test set in docs/results.md)
TEST_EXPORT_PRECISION = "f32"


def run(cmd: list[str], cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "MLFLOW_"))}
    full_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full_env['PATH']}"
    full_env.update(env)
    result = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def experiments(clone: Path) -> dict[str, dict]:
    """{experiment name: its params.yaml} of every DVC experiment, from `dvc exp show --json`."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], clone).stdout)
    found = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                found[rev["name"]] = rev["data"]["params"]["params.yaml"]["data"]
    return found


def set_yaml_keys(path: Path, **values) -> None:
    """Set `key: value` lines of a conf file (at any indentation), e.g. to shrink a profile for a test."""
    text = path.read_text()
    for key, value in values.items():
        text, count = re.subn(rf"(?m)^(\s*){key}:.*$", rf"\g<1>{key}: {value}", text)
        assert count == 1, f"{key} not found once in {path}"
    path.write_text(text)


def copy_worktree(dest: Path) -> Path:
    """The working tree (tracked and new files, not ignored ones) in a new git repository at `dest`."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    run(["git", "init", "-q"], dest)
    return dest


def tiny_repo(dest: Path, pubmedqa_dir: Path, tiny_model_dir: Path) -> Path:
    """This repository, committed, on the tiny model, 8 documents per split and one short epoch."""
    copy_worktree(dest)
    model = {
        "name": str(tiny_model_dir),
        "embedded_package": None,
        "install": None,
        "dims": [64, 32, 16],
        "max_seq_length": 64,
    }
    spec = {"defaults": [{"/train": "default"}, "_self_"], "model": model}  # as conf/model/minilm.yaml
    (dest / "conf/model/tiny.yaml").write_text("# @package _global_\n" + yaml.safe_dump(spec, sort_keys=False))
    cfg = dest / "conf/config.yaml"
    cfg.write_text(cfg.read_text().replace("- model: minilm", "- model: tiny"))
    set_yaml_keys(cfg, inference_precision=TEST_EXPORT_PRECISION)
    set_yaml_keys(dest / "conf/data/pairs.yaml", max_docs=8)  # pubmedqa.yaml inherits it
    set_yaml_keys(dest / "conf/mining/default.yaml", range_max=5)
    run(["python", "-m", "commands.fetch_raw", "--from", str(pubmedqa_dir)], dest)
    set_yaml_keys(dest / "conf/train/default.yaml", epochs=1, batch_size=4, matryoshka_weights="null")
    run(["python", "-m", "commands.compose_params"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], dest)
    return dest
