"""Which pipeline execution a stage belongs to (a DVC experiment, or the commit plus params.yaml), what
it is named after, and MLflow's names for nested params and metrics."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PIPELINE_TAG = "pipeline_key"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True)
        return out.stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def _git_head() -> str:
    return (_git("rev-parse", "HEAD") or "no-commit").strip()


def _show_value(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | dict) else str(value)


def param_overrides(params: Mapping[str, Any], committed: Mapping[str, Any] | None) -> dict[str, str]:
    """The flattened keys whose values differ from the committed params.yaml (a sweep's `-S` knobs)."""
    if committed is None:
        return {}
    now, before = flatten(params), flatten(committed)
    return {k: _show_value(v) for k, v in now.items() if k not in before or before[k] != v}


# Keys a data profile sets together: one changed names the data set in the run name (data=scifact) instead
DATA_IDENTITY = ("data.source", "data.path", "data.watch")


def short_overrides(changed: Mapping[str, str], params: Mapping[str, Any]) -> dict[str, str]:
    """The run name's view of `changed`: another data set is `data=<its folder or file name>`, first (MLflow
    cuts long names), not every key its profile or its reading brings (source, path, watch, published files,
    columns, the test file's watch); the other changed keys stay as they are."""
    if not any(k in changed for k in DATA_IDENTITY):
        return dict(changed)
    how = ("data.files.", "data.columns.", "data.test_watch")
    short = {k: v for k, v in changed.items() if k not in DATA_IDENTITY and not k.startswith(how)}
    return {"data": Path(str(params["data"]["path"])).name, **short}


def _committed_params(rev: str, params_file: str | Path) -> dict[str, Any] | None:
    import yaml

    text = _git("show", f"{rev}:./{Path(params_file).as_posix()}")  # ./: relative to the working folder
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return None


def pipeline_identity(params_file: str | Path = "params.yaml") -> tuple[str, str, dict[str, str]]:
    """(key, run name, tags) of the current pipeline execution.

    The name says what distinguishes the run: the DVC experiment's name (or `repro @<commit>`) and the
    params that differ from the commit's params.yaml; the description (MLflow's note) says it in full.
    """
    import yaml

    exp = os.environ.get("DVC_EXP_NAME")
    text = Path(params_file).read_text(encoding="utf-8")
    if exp:
        rev = os.environ.get("DVC_EXP_BASELINE_REV", "") or _git_head()
        key, label, what = f"exp:{exp}:{rev}", exp, f"DVC experiment `{exp}` on commit `{rev[:7]}`"
        tags = {"dvc_exp_name": exp, "git_commit": rev}
    else:
        rev = _git_head()
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        at = f"@{rev[:7]}" if rev != "no-commit" else "(no commit)"
        key, label, what = f"repro:{rev}:{digest}", f"repro {at}", f"`dvc repro` {at}"
        tags = {"git_commit": rev}
    committed = _committed_params(rev, params_file)
    params = yaml.safe_load(text) or {}
    changed = param_overrides(params, committed)
    knobs = " ".join(f"{k}={v}" for k, v in changed.items())
    if committed is None:  # no commit to compare with
        name, note = label, f"{what}: params.yaml not in a commit"
    elif changed:
        short = " ".join(f"{k}={v}" for k, v in short_overrides(changed, params).items())
        name, note = f"{label} {short}", f"{what}: the commit's params.yaml with {knobs}"
    else:
        name, note = f"{label} (committed params)", f"{what}: the commit's params.yaml as is"
    return key, name[:240], {**tags, "mlflow.note.content": note, "overrides": knobs or "none"}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay whole."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def metric_name(name: str) -> str:
    """MLflow rejects '@': cosine_ndcg@10 -> cosine_ndcg_at_10."""
    return name.replace("@", "_at_")
