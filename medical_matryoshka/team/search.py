"""A search over recipes whose trials are DVC experiments: an Optuna study (Study.optimize) where each trial is
`dvc exp run --temp -n <study>-<number> -S knob=value ...` in this clone.

The study lives in Optuna's storage (RDB: PostgreSQL for a team), so workers started on several machines with
the same study name and storage take trials from one study; each worker runs its trials in its own clone. The
space, objectives, sampler and pruner come from conf/search.yaml (not params.yaml: no stage reads them).
Objectives are keys of metrics/summary.json (NDCG@10 by dim) read from the experiment's commit; `full` and
`smallest` name the largest and the smallest dim. With two objectives the study is multi-objective and its
result is a Pareto front. Pruning (single objective only: Optuna's Trial.report takes one value) watches the
dev NDCG@10 the train stage logs per epoch on the trial's MLflow parent run, and stops the trial's `dvc` like a
Ctrl-C: DVC records no experiment for a trial it did not finish, so its record holds only complete recipes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medical_matryoshka.core.dims import dim_label, dim_of, is_label
from medical_matryoshka.core.errors import Interrupted, PipelineError
from medical_matryoshka.core.lifetime import stoppable_child
from medical_matryoshka.team.space import SearchSpace, objective_dim, override_text

TRIAL_LOGS = ".cache/search"  # one <experiment>.log per trial: what its `dvc exp run` printed
STOP_SECONDS = 60.0  # a stopped trial's dvc gets this long to end its stages (runs KILLED) before SIGKILL


class TrialFailed(Exception):
    """A trial's `dvc exp run` failed: the study marks it FAIL and the search goes on."""


def objective_keys(space: SearchSpace, summary: Mapping[str, float]) -> list[str]:
    """metrics/summary.json keys of the objectives: `full` is the largest dim, `smallest` the smallest."""
    dims = sorted(dim_of(k) for k in summary if is_label(k))
    if not dims:
        raise TrialFailed(f"metrics/summary.json holds no dims ({sorted(summary)})")
    keys = []
    for name in space.objectives:
        key = dim_label(objective_dim(name, dims))
        if key not in summary:
            raise TrialFailed(
                f"objective {name}: metrics/summary.json has no {key} (it has {', '.join(map(dim_label, dims))})"
            )
        keys.append(key)
    return keys


def make_sampler(space: SearchSpace):
    import optuna

    cfg = dict(space.sampler)
    kind, seed = cfg.pop("type", "tpe"), cfg.pop("seed", None)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=int(cfg.get("population", 8)))
    # constant_liar: a running trial counts as a poor result, so parallel workers do not all ask for one point
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(cfg.get("startup_trials", 4)), constant_liar=True)


def make_pruner(space: SearchSpace, evals_per_epoch: int = 1):
    """The space's pruner; it counts dev evaluations (train.evals_per_epoch of them an epoch), so its warm-up,
    given in epochs, is converted."""
    import optuna

    cfg = dict(space.pruner)
    kind = cfg.get("type", "none")
    if kind == "none" or len(space.objectives) > 1:
        return optuna.pruners.NopPruner()
    if kind == "threshold":
        return optuna.pruners.ThresholdPruner(lower=float(cfg["lower"]))
    return optuna.pruners.MedianPruner(
        n_startup_trials=int(cfg.get("startup_trials", 4)),
        n_warmup_steps=int(cfg.get("warmup_epochs", 1)) * evals_per_epoch,
    )


def storage(url: str):
    """Optuna's RDB storage with heartbeats: a trial whose worker died (killed, machine lost) is marked FAIL by
    the next worker that asks for a trial, after `grace` seconds without a beat."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: since Optuna 2.9
    return optuna.storages.RDBStorage(url, heartbeat_interval=20, grace_period=90)


def load_study(space: SearchSpace, url: str, create: bool = True, attempts: int = 5, evals_per_epoch: int = 1):
    """The study (created by the first worker unless `create` is off). Workers started at the same moment on a
    new storage race to create Optuna's tables: the loser's IntegrityError is retried."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our one line, not its traceback
    shown = shown_url(url)
    for attempt in range(attempts):
        try:
            if create:
                study = optuna.create_study(
                    storage=storage(url),
                    study_name=space.study,
                    directions=["maximize"] * len(space.objectives),
                    sampler=make_sampler(space),
                    pruner=make_pruner(space, evals_per_epoch),
                    load_if_exists=True,
                )
            else:
                study = optuna.load_study(study_name=space.study, storage=storage(url))
            break
        except KeyError:
            raise PipelineError(f"no study '{space.study}' in {shown}; a worker creates it when it starts") from None
        except IntegrityError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)
        except OperationalError as err:
            first = str(err.orig or err).strip().splitlines()[0]
            raise PipelineError(f"study storage {shown} is unreachable ({first}); start it or pass --storage") from None
    if len(study.directions) != len(space.objectives):
        raise PipelineError(
            f"study '{space.study}' in {shown} has {len(study.directions)} objective(s) and the search space "
            f"names {len(space.objectives)} ({', '.join(space.objectives)}); name another study (--study) or "
            "keep its objectives"
        )
    return study


def shown_url(url: str) -> str:
    """`url` without a password in it."""
    return re.sub(r"(://[^:/@]+):[^@/]+@", r"\1:***@", url)


def git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise TrialFailed(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def experiment_commit(name: str, repo: Path) -> str:
    """The commit DVC recorded for the experiment `name` (refs/exps/<baseline>/<name>)."""
    refs = git("for-each-ref", "--format=%(refname) %(objectname)", "refs/exps/", cwd=repo).split("\n")
    found = [line.split()[1] for line in refs if line.split() and line.split()[0].endswith(f"/{name}")]
    if not found:
        raise TrialFailed(f"dvc exp run finished but no experiment named {name} is recorded")
    return found[-1]


@dataclass
class Worker:
    """One search worker: runs the trials this process takes from the study, in the clone at `repo`."""

    space: SearchSpace
    repo: Path
    summary_file: str  # params paths.summary_metrics
    dev_metric: Callable[[str], str]  # objective summary key -> the parent run's dev curve (d0384.dev_ndcg10)
    push: str | None = None  # git remote to `dvc exp push` each finished trial to (and its DVC cache)
    poll_seconds: float = 5.0
    client: Any = None  # MlflowClient or None (tracking off)
    experiment: str = "medical-matryoshka"
    interrupted: Interrupted | None = None
    stopped_trial: int | None = None
    finished_before_stop: bool = False  # the stopped trial's `dvc exp run` had finished: it is COMPLETE

    def name(self, trial) -> str:
        return f"{self.space.study}-{trial.number:03d}"

    def command(self, trial, values: Mapping[str, Any]) -> list[str]:
        sets = [f"{k}={override_text(v)}" for k, v in values.items()]
        return [
            "dvc",
            "exp",
            "run",
            "--temp",
            "-n",
            self.name(trial),
            *(a for s in [*self.space.fixed, *sets] for a in ("-S", s)),
        ]

    def __call__(self, trial) -> float | list[float]:
        values = {knob.name: knob.suggest(trial) for knob in self.space.knobs}
        name = self.name(trial)
        trial.set_user_attr("experiment", name)
        trial.set_user_attr("host", os.uname().nodename)
        trial.set_user_attr("clone", str(self.repo))
        log_file = self.repo / TRIAL_LOGS / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        shown = " ".join(f"{k}={override_text(v)}" for k, v in values.items())
        print(f"trial {trial.number}: {name}  {shown}  (log: {log_file.relative_to(self.repo)})", flush=True)
        started = time.monotonic()
        state, proc = "FAIL", None
        try:
            with log_file.open("w") as log:
                proc = subprocess.Popen(
                    self.command(trial, values),
                    cwd=self.repo,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group, stopped as a whole (_stop)
                    preexec_fn=stoppable_child,  # stopped by _stop's SIGINT; a killed worker leaves none running
                )
                try:
                    self._watch(trial, proc, name)
                except BaseException:
                    self._stop(proc)
                    raise
            if proc.returncode != 0:
                raise TrialFailed(f"dvc exp run exited {proc.returncode}: {_error_line(log_file)}")
            result = self._result(trial, name, started)
            state = "COMPLETE"
            return result
        except _Pruned:
            state = "PRUNED"
            self._end_stopped(name)
            import optuna

            print(f"trial {trial.number}: pruned (dev NDCG@10 behind the other trials at this point)", flush=True)
            raise optuna.TrialPruned() from None
        except TrialFailed as err:
            trial.set_user_attr("error", str(err)[:1000])
            print(f"trial {trial.number}: failed: {err}", flush=True)
            raise
        except Interrupted as err:
            self.interrupted, self.stopped_trial = err, trial.number
            # The stop came after the trial's `dvc exp run` had finished (its runs FINISHED, its experiment
            # recorded): the trial is complete, and the worker stops after it (the signal handler ignores
            # further signals, so recording the result is not cut short). Otherwise Optuna marks it FAIL.
            if proc is not None and proc.poll() == 0:
                with contextlib.suppress(TrialFailed):
                    result = self._result(trial, name, started)
                    state, self.finished_before_stop = "COMPLETE", True
                    trial.study.stop()
                    return result
            trial.set_user_attr("error", f"stopped by {err}")
            self._end_stopped(name)
            raise KeyboardInterrupt(str(err)) from None  # Optuna marks a KeyboardInterrupt's trial FAIL, re-raises
        finally:
            self._tag(
                name, {"search.study": self.space.study, "search.trial": str(trial.number), "search.state": state}
            )

    def _result(self, trial, name: str, started: float) -> float | list[float]:
        """A finished trial's objectives from its experiment's metrics/summary.json (pushed with --push)."""
        commit = experiment_commit(name, self.repo)
        summary = json.loads(git("show", f"{commit}:{self.summary_file}", cwd=self.repo))
        keys = objective_keys(self.space, summary)
        trial.set_user_attr("commit", commit)
        trial.set_user_attr("objective_keys", keys)
        result = [float(summary[k]) for k in keys]
        if self.push:
            self._push(trial, name)
        minutes = (time.monotonic() - started) / 60
        print(f"trial {trial.number}: {', '.join(f'{k} {v:.4f}' for k, v in zip(keys, result, strict=True))} "
              f"({minutes:.1f} min)", flush=True)  # fmt: skip
        return result if len(result) > 1 else result[0]

    def _watch(self, trial, proc: subprocess.Popen, name: str) -> None:
        """Until `dvc` ends: tag its MLflow parent run with the study and trial as soon as it exists, and (pruning
        on) report each new dev evaluation and stop the trial when the pruner says so."""
        tagged, reported = False, 0
        prune = len(self.space.objectives) == 1 and self.space.pruner.get("type", "none") != "none"
        while proc.poll() is None:
            time.sleep(self.poll_seconds)
            if self.client is None or (tagged and not prune):
                continue
            parent = self._parent(name)
            if parent is None:
                continue
            if not tagged:
                tagged = self._tag(name, {"search.study": self.space.study, "search.trial": str(trial.number)}, parent)
            if prune:
                history = self._dev_curve(parent, self.dev_metric(self.space.objectives[0]))
                for value in history[reported:]:
                    reported += 1
                    trial.report(value, reported)
                    if trial.should_prune():
                        raise _Pruned()

    def _parent(self, name: str):
        try:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                return None
            runs = self.client.search_runs([exp.experiment_id], filter_string=f"tags.dvc_exp_name = '{name}'")
        except Exception:  # noqa: BLE001 - the store is busy or away: the stages handle that; look again later
            return None
        parents = [r for r in runs if "stage" not in r.data.tags]
        return parents[0].info.run_id if parents else None

    def _dev_curve(self, run_id: str, metric: str) -> list[float]:
        try:
            history = self.client.get_metric_history(run_id, metric)
        except Exception:  # noqa: BLE001 - as above
            return []
        return [m.value for m in sorted(history, key=lambda m: m.step) if not math.isnan(m.value)]

    def _end_stopped(self, name: str) -> None:
        """A trial stopped (pruned, or the worker stopped) between two stages has no stage left to end its parent
        run, which stays SCHEDULED: end it KILLED, as a stage stopped mid-run ends it."""
        parent = self._parent(name) if self.client is not None else None
        if parent is None:
            return
        with contextlib.suppress(Exception):  # the store is busy or away: the next stage's sweep ends it
            if self.client.get_run(parent).info.status in ("SCHEDULED", "RUNNING"):
                self.client.set_terminated(parent, status="KILLED")

    def _tag(self, name: str, tags: Mapping[str, str], parent: str | None = None) -> bool:
        if self.client is None:
            return False
        parent = parent or self._parent(name)
        if parent is None:
            return False
        try:
            for key, value in tags.items():
                self.client.set_tag(parent, key, value)
            return True
        except Exception:  # noqa: BLE001 - a tag is not worth a trial
            return False

    def _push(self, trial, name: str) -> None:
        result = subprocess.run(["dvc", "exp", "push", self.push, name], cwd=self.repo, capture_output=True, text=True)
        trial.set_user_attr("pushed", result.returncode == 0)
        if result.returncode != 0:
            print(f"warning: dvc exp push {self.push} {name} failed ({_last_line(result.stderr or result.stdout)}); "
                  "the trial stays complete here, push it later", flush=True)  # fmt: skip

    def _stop(self, proc: subprocess.Popen) -> None:
        """Stop a trial as Ctrl-C in its terminal does: SIGINT to its whole process group (`dvc` ignores SIGINT
        while a stage runs and leaves it to the stage, which ends its runs KILLED), then wait for it."""
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class _Pruned(Exception):
    pass


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _error_line(log_file: Path) -> str:
    """The stage's `error:` line if it printed one, else DVC's last line."""
    text = log_file.read_text(errors="replace") if log_file.exists() else ""
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    return errors[-1] if errors else _last_line(text)


def front(study) -> list:
    """The Pareto front (multi-objective) or the best trial (one objective); [] before any trial completes."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return list(study.best_trials) if len(study.directions) > 1 else [study.best_trial]


def report(study, space: SearchSpace) -> str:
    """The study in a few lines: trial counts by state, the front as a table, the best trial per objective."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {
        s.name.lower(): sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)
    }
    states = f" ({', '.join(f'{n} {s}' for s, n in counts.items())})" if counts else ""
    lines = [f"study {space.study}: {len(trials)} trials{states}"]
    best = front(study)
    if not best:
        return "\n".join([*lines, "no trial has completed yet"])
    keys = best[0].user_attrs.get("objective_keys") or list(space.objectives)
    names = [knob.name for knob in space.knobs]
    title = "Pareto front: no other trial is better at both" if len(keys) > 1 else "best trial"
    lines.append(f"{title} (NDCG@10 at {' and '.join(keys)}):")
    header = ["trial", "experiment", *keys, *names]
    table = [header]
    for t in sorted(best, key=lambda t: -t.values[0]):
        table.append([str(t.number), t.user_attrs.get("experiment", ""), *(f"{v:.4f}" for v in t.values),
                      *(override_text(t.params.get(n, "")) if not isinstance(t.params.get(n), float)
                        else f"{t.params[n]:.3g}" for n in names)])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table]
    for i, key in enumerate(keys):
        top = max(best, key=lambda t: t.values[i])
        lines.append(f"best at {key}: trial {top.number} ({top.user_attrs.get('experiment', '')}, {top.values[i]:.4f})")
    lines.append("take one: dvc exp apply <experiment> && dvc pull   (in another clone: dvc exp pull origin first)")
    return "\n".join(lines)
