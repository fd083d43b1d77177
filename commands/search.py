"""A search over training recipes, spread over machines: an Optuna study whose trials are DVC experiments.

    python -m commands.search                               # conf/search.yaml: its study, space and objectives
    python -m commands.search --trials 12 -S profile=smoke  # another total; -S: fixed for every trial
    python -m commands.search --push origin                 # `dvc exp push origin <trial>` after each trial
    python -m commands.search --report                      # the trials and the front so far; runs nothing

Each trial is `dvc exp run --temp -n <study>-<number> -S knob=value ...` in this clone (the workspace is left
as it is; DVC records the experiment, MLflow its parent run, tagged search.study / search.trial). The study is
in --storage ($OPTUNA_STORAGE, else sqlite:///optuna.db here): start a worker with the same study and storage
on every machine (one per clone) and they share its trials until `trials` have been taken. With two objectives
(NDCG@10 at the full and at the smallest dim) it ends with the Pareto front: the recipes no other beats at
both. A failed trial is marked FAIL and the search goes on; a worker stopped with Ctrl-C or SIGTERM marks its
trial FAIL (COMPLETE if its dvc exp run had already finished) and exits; one that dies outright is marked FAIL
by another worker once its heartbeat is 90 s stale.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from medical_matryoshka.core.dims import dim_label
from medical_matryoshka.core.errors import PipelineError, run_main
from medical_matryoshka.core.params import load_params
from medical_matryoshka.core.sections import EvalConfig, ModelConfig, PathsConfig, TrackingConfig, read_section
from medical_matryoshka.core.tracking.store import tracking_uri
from medical_matryoshka.team.search import TrialFailed, Worker, load_study, report, shown_url
from medical_matryoshka.team.space import SPACE_FILE, check_knobs, objective_dim, parse_space

DEFAULT_STORAGE = "sqlite:///optuna.db"  # one machine; a team's is PostgreSQL (docs/team.md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", type=Path, default=Path(SPACE_FILE), help=f"the search (default {SPACE_FILE})")
    parser.add_argument("--study", help="the study's name (default: the file's `study`)")
    parser.add_argument("--trials", type=int, help="the study's total over all workers (default: the file's)")
    parser.add_argument("--storage", default=os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE,
                        help="Optuna storage URL (default $OPTUNA_STORAGE, else sqlite:///optuna.db)")  # fmt: skip
    parser.add_argument("--push", metavar="REMOTE", help="git remote to `dvc exp push` each finished trial to")
    parser.add_argument("-S", dest="fixed", action="append", default=[], help="key=value every trial takes")
    parser.add_argument("--report", action="store_true", help="print the trials and the front; run nothing")
    args = parser.parse_args()

    if not args.space.is_file():
        raise PipelineError(f"{args.space} not found; the search space lives there (see {SPACE_FILE})")
    try:
        data = yaml.safe_load(args.space.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise PipelineError(f"{args.space}: not YAML ({str(err).splitlines()[0]})") from None
    if isinstance(data, dict):
        data = {**data, **{k: v for k, v in (("study", args.study), ("trials", args.trials)) if v is not None}}
        data["fixed"] = [*(data.get("fixed") or []), *args.fixed]
    space = parse_space(data, str(args.space))
    params = load_params()
    check_knobs(space, params, Path("conf"), str(args.space))
    evals_per_epoch = int(params.get("train", {}).get("evals_per_epoch", 1))  # the pruner counts dev evaluations
    study = load_study(space, args.storage, create=not args.report, evals_per_epoch=evals_per_epoch)
    if args.report:
        print(report(study, space))
        return

    import optuna
    from optuna.trial import TrialState

    TAKEN = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    model, eval_cfg = read_section(ModelConfig, params, "model"), read_section(EvalConfig, params, "eval")
    label = eval_cfg.primary_measure.replace("@", "")

    def dev_metric(objective: str) -> str:  # the train stage's dev curve on the parent run: d0384.dev_ndcg10
        return f"{dim_label(objective_dim(objective, list(model.dims)))}.dev_{label}"

    from mlflow import MlflowClient

    worker = Worker(
        space=space,
        repo=Path.cwd(),
        summary_file=read_section(PathsConfig, params, "paths").summary_metrics,
        dev_metric=dev_metric,
        push=args.push,
        client=MlflowClient(tracking_uri=tracking_uri()),
        experiment=read_section(TrackingConfig, params, "tracking").experiment,
    )
    taken = len(study.get_trials(deepcopy=False, states=TAKEN))  # enqueued (WAITING) trials are still to run
    print(f"worker {os.uname().nodename}:{Path.cwd()} joins study {space.study} at {shown_url(args.storage)} "
          f"({taken} of {space.trials} trials taken; MLflow {tracking_uri()})", flush=True)  # fmt: skip
    if taken < space.trials:
        try:
            study.optimize(
                worker,
                catch=(TrialFailed,),
                callbacks=[optuna.study.MaxTrialsCallback(space.trials, states=TAKEN)],
            )
        except KeyboardInterrupt:
            err, number = worker.interrupted, worker.stopped_trial
            signame = str(err) if err else "SIGINT"
            print(f"error: stopped by {signame}; trial {number} is marked FAIL in the study and its MLflow runs "
                  "KILLED; start the worker again to go on with the study", file=sys.stderr)  # fmt: skip
            sys.exit(128 + (err.signum if err else 2))
        if worker.interrupted is not None:  # the stop came once the trial's dvc exp run had finished
            err = worker.interrupted
            print(report(study, space))
            print(f"error: stopped by {err} after trial {worker.stopped_trial} had finished: it is COMPLETE in the "
                  "study with its result and its MLflow runs FINISHED; start the worker again to go on with the study",
                  file=sys.stderr)  # fmt: skip
            sys.exit(128 + err.signum)
    print(report(study, space))


if __name__ == "__main__":
    run_main(main)
