"""The model card's published numbers as a baseline that `dvc metrics diff` can compare against.

metrics/model_card.json (paths.card) holds the card's tables in this pipeline's schema:
{"base": {"dim_768": {"cosine_ndcg@10": ...}}, "finetuned": {...}} (the card lists the base model's
tables first, then the fine-tuned model's). `dvc metrics diff` compares revisions, so the card's numbers
go into a git ref, `model-card`: HEAD's tree with each pipeline metrics file replaced by the card's
numbers, and those the card has nothing for left out (`python -m commands.card` writes it).
`python -m commands.card diff` prints the card's numbers beside this run's, only what the card published. On
the default data (PubMedQA, the card's stand-in) the run's value minus the card's is a column; on other data
(own_gains) it would read as a gain, so each model's own base -> fine-tuned gain stands beside the other's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from medical_matryoshka.core.dims import dim_of
from medical_matryoshka.core.errors import PipelineError
from medical_matryoshka.core.sections import PathsConfig
from medical_matryoshka.retrieval.tables import by_dim, metric_change

REF = "refs/tags/model-card"
CARD_STAND_IN = "pubmedqa"  # data.source of the default data, the card's stand-in: on any other, own gains
_DATASET = re.compile(r"^\* Dataset: `(dim_\d+)`")
_ROW = re.compile(r"^\|\s*\**(cosine_[a-z]+@\d+)\**\s*\|\s*\**([0-9.]+)\**\s*\|")


def parse_card(text: str) -> dict[str, dict[str, dict[str, float]]]:
    """The card's Information Retrieval tables: first occurrence of a dim is the base model's."""
    tables: dict[str, dict[str, dict[str, float]]] = {"base": {}, "finetuned": {}}
    current: dict[str, float] | None = None
    for line in text.splitlines():
        if m := _DATASET.match(line):
            which = "base" if m.group(1) not in tables["base"] else "finetuned"
            current = tables[which].setdefault(m.group(1), {})
        elif current is not None and (m := _ROW.match(line)):
            current[m.group(1)] = float(m.group(2))
    if not tables["base"] or not tables["finetuned"]:
        raise PipelineError("no Information Retrieval tables found in the card; is it a sentence-transformers card?")
    return tables


def card_views(card: dict, paths: PathsConfig, metric: str) -> dict[str, dict | None]:
    """What each pipeline metrics file would hold if this pipeline had produced the card's numbers; None for
    the files the card has nothing for (data, mining, training): the ref leaves them out."""
    return {
        paths.baseline_metrics: {"base": card["base"]},
        paths.eval_metrics: {**card, "change": metric_change(card["base"], card["finetuned"])},
        paths.summary_metrics: {  # the run's summary.json less what only a run has (vs_base, test_queries)
            **by_dim(card["finetuned"], metric),
            "base": by_dim(card["base"], metric),
            "change": by_dim(metric_change(card["base"], card["finetuned"]), metric),
        },
        paths.data_metrics: None,
        paths.mining_metrics: None,
        paths.train_metrics: None,
    }


def card_diff(card: dict, run: dict, measures: tuple[str, ...] = (), own_gains: bool = False) -> list[str]:
    """The card's published numbers beside this run's (metrics/eval.json), per metric and dimension both have:
    base and fine-tuned, card, run and change (run - card); with `own_gains` (the run is on other data than
    the card's), each model's base, fine-tuned and gain instead. `measures` keeps metrics whose name contains
    one of them."""
    dims = [d for d in card["finetuned"] if d in run["finetuned"]]
    if not dims:
        return [f"no dimension in common: the card has {', '.join(card['finetuned'])}, this run "
                f"{', '.join(run['finetuned'])}"]  # fmt: skip
    metrics = [m for m in card["finetuned"][dims[0]] if not measures or any(x in m for x in measures)]
    width = max(len(m) for m in metrics) if metrics else 6
    if own_gains:  # each model's own base -> fine-tuned, the card's beside this run's
        titles, names = ("the card (its model, its data)", "this run (your data)"), ("base", "tuned", "gain")
        pairs = [(card["base"], card["finetuned"]), (run["base"], run["finetuned"])]
    else:  # the card's value beside this run's, base and fine-tuned
        titles, names = ("base model", "fine-tuned"), ("card", "run", "change")
        pairs = [(card["base"], run["base"]), (card["finetuned"], run["finetuned"])]
    return _side_by_side(metrics, dims, width, titles, names, pairs)


def _side_by_side(metrics, dims, width: int, titles, names, pairs) -> list[str]:
    """Two groups of (first, second, second - first) per metric and dim, each read from a pair of
    {"dim_<d>": {metric: value}} tables; "-" where either has no value."""
    lines = [
        f"{'':{width}}  {'':>5}  {titles[0]:^24}  {titles[1]:^24}",
        f"{'metric':{width}}  {'dim':>5}" + f"  {names[0]:>6}  {names[1]:>6}  {names[2]:>7}" * 2,
    ]
    for metric in metrics:
        for dim in dims:
            cells = []
            for tables in pairs:
                first, second = (table.get(dim, {}).get(metric) for table in tables)
                if first is None or second is None:
                    cells.append(f"{'-':>6}  {'-':>6}  {'-':>7}")
                else:
                    cells.append(f"{first:6.4f}  {second:6.4f}  {second - first:+7.4f}")
            lines.append(f"{metric:{width}}  {dim_of(dim):>5}  {cells[0]}  {cells[1]}")
    return lines


def _git(*args: str, env: dict[str, str] | None = None, data: str | None = None) -> str:
    result = subprocess.run(["git", *args], capture_output=True, text=True, input=data, env=env)
    if result.returncode != 0:
        raise PipelineError(f"git {' '.join(args)} failed: {result.stderr.strip()}; run this inside the git clone")
    return result.stdout.strip()


def write_card_ref(files: dict[str, dict | None]) -> str:
    """Commit HEAD's tree with `files` (JSON; None: left out) to REF, without touching the index or work tree."""
    git_dir = Path(_git("rev-parse", "--absolute-git-dir"))
    env = {
        **os.environ,
        "GIT_INDEX_FILE": str(git_dir / "model-card.index"),
        "GIT_AUTHOR_NAME": "model card",
        "GIT_AUTHOR_EMAIL": "model-card@localhost",
        "GIT_COMMITTER_NAME": "model card",
        "GIT_COMMITTER_EMAIL": "model-card@localhost",
    }
    try:
        head = _git("rev-parse", "--verify", "-q", "HEAD")
    except PipelineError:
        raise PipelineError(
            "the repository has no commit yet; commit first, then run python -m commands.card"
        ) from None
    try:
        _git("read-tree", head, env=env)
        for path, content in files.items():
            if content is None:
                _git("update-index", "--force-remove", path, env=env)
                continue
            blob = _git("hash-object", "-w", "--stdin", data=json.dumps(content, indent=2) + "\n")
            _git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
        tree = _git("write-tree", env=env)
    finally:
        Path(env["GIT_INDEX_FILE"]).unlink(missing_ok=True)
    commit = _git("commit-tree", tree, "-p", head, "-m", "The model card's published numbers", env=env)
    _git("update-ref", REF, commit)
    return commit
