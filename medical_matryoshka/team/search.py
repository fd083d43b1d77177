"""A search over recipes whose trials are DVC experiments: an Optuna study (ask, run, tell) where each trial is
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medical_matryoshka.errors import Interrupted, PipelineError
from medical_matryoshka.lifetime import parent_death_signal

SPACE_FILE = "conf/search.yaml"
TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("median", "threshold", "none")
TRIAL_LOGS = ".cache/search"  # one <experiment>.log per trial: what its `dvc exp run` printed
STOP_SECONDS = 60.0  # a stopped trial's dvc gets this long to end its stages (runs KILLED) before SIGKILL


class TrialFailed(Exception):
    """A trial's `dvc exp run` failed: the study marks it FAIL and the search goes on."""


@dataclass(frozen=True)
class Knob:
    name: str  # a `-S` key exactly as `dvc exp run -S` takes it: lr, train.matryoshka_weights, model (a group)
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass(frozen=True)
class SearchSpace:
    study: str
    trials: int
    objectives: tuple[str, ...]
    knobs: tuple[Knob, ...]
    sampler: Mapping[str, Any] = field(default_factory=dict)
    pruner: Mapping[str, Any] = field(default_factory=dict)
    fixed: tuple[str, ...] = ()  # `-S key=value` every trial takes (e.g. profile=smoke)


def _bad(where: str, what: str) -> PipelineError:
    return PipelineError(f"{where}: {what}")


def parse_space(data: Any, where: str = SPACE_FILE) -> SearchSpace:
    """The search from conf/search.yaml's mapping, checked: one line naming the key for anything wrong."""
    if not isinstance(data, dict):
        raise _bad(where, "must be a mapping with study, trials, objectives and space")
    unknown = sorted(set(data) - {"study", "trials", "objectives", "space", "sampler", "pruner", "fixed"})
    if unknown:
        raise _bad(where, f"unknown key(s) {unknown} (known: study, trials, objectives, space, sampler, pruner, fixed)")
    study = str(data.get("study", ""))
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", study):
        raise _bad(
            where, f"study must be a name of letters, digits, '.', '_' or '-' (it names DVC experiments), got {study!r}"
        )
    trials = data.get("trials")
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise _bad(where, f"trials must be a positive integer (the study's total over all workers), got {trials!r}")
    objectives = data.get("objectives")
    if isinstance(objectives, str):
        objectives = [objectives]
    if (
        not isinstance(objectives, list)
        or not 1 <= len(objectives) <= 2
        or not all(o in ("full", "smallest") or re.fullmatch(r"d\d{4}", str(o)) for o in objectives)
    ):
        raise _bad(
            where, f"objectives must be one or two of full, smallest or a summary key like d0128, got {objectives!r}"
        )
    if len(set(objectives)) != len(objectives):
        raise _bad(where, f"objectives repeat: {objectives}")
    space = data.get("space")
    if not isinstance(space, dict) or not space:
        raise _bad(where, "space must map each knob (a `dvc exp run -S` key) to its range or choices")
    knobs = tuple(_knob(str(name), spec, f"{where}: space.{name}") for name, spec in space.items())
    sampler = data.get("sampler") or {}
    if not isinstance(sampler, dict) or sampler.get("type", "tpe") not in SAMPLERS:
        raise _bad(where, f"sampler.type must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    pruner = data.get("pruner") or {}
    if not isinstance(pruner, dict) or pruner.get("type", "none") not in PRUNERS:
        raise _bad(where, f"pruner.type must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    fixed = data.get("fixed") or []
    if not isinstance(fixed, list) or not all(isinstance(f, str) and "=" in f for f in fixed):
        raise _bad(where, f"fixed must be a list of key=value overrides, got {fixed!r}")
    return SearchSpace(study, trials, tuple(objectives), knobs, dict(sampler), dict(pruner), tuple(fixed))


def _knob(name: str, spec: Any, where: str) -> Knob:
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        raise PipelineError(f"{where}: needs type: {' | '.join(TYPES)}, got {spec!r}")
    kind = spec["type"]
    extra = sorted(set(spec) - {"type", "low", "high", "log", "step", "choices"})
    if extra:
        raise PipelineError(f"{where}: unknown key(s) {extra}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise PipelineError(f"{where}: a categorical knob needs a non-empty list of choices")
        # Optuna stores choices as scalars; a list value (matryoshka weights) is written as its -S text
        return Knob(
            name, kind, choices=tuple(c if not isinstance(c, list | dict) else _override_text(c) for c in choices)
        )
    low, high = spec.get("low"), spec.get("high")
    number = (int,) if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)) or not low < high:
        raise PipelineError(f"{where}: a {kind} knob needs low < high ({kind} values), got low={low!r} high={high!r}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise PipelineError(f"{where}: a log-uniform range needs low > 0, got {low!r}")
    return Knob(name, kind, float(low), float(high), log, spec.get("step"))


def _override_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def check_knobs(space: SearchSpace, params: Mapping[str, Any], conf: Path, where: str = SPACE_FILE) -> None:
    """Every knob must be a key of params.yaml or a config group of conf/: DVC reruns nothing for a key no stage
    declares, so a typo would give every trial the baseline's numbers."""
    from medical_matryoshka.tracking.runs import flatten

    keys = set(flatten(params))
    groups = {p.name: {f.stem for f in p.glob("*.yaml")} for p in conf.iterdir() if p.is_dir()}
    for knob in space.knobs:
        if knob.name in groups:
            unknown = (
                [c for c in knob.choices if str(c) not in groups[knob.name]] if knob.type == "categorical" else ["?"]
            )
            if unknown:
                raise PipelineError(
                    f"{where}: space.{knob.name}: a config group takes categorical choices among "
                    f"{sorted(groups[knob.name])}, got {list(knob.choices) or knob.type}"
                )
        elif knob.name not in keys:
            raise PipelineError(
                f"{where}: space.{knob.name} is not a key of params.yaml nor a config group in {conf}/ "
                "(DVC would rerun nothing and every trial would score the baseline); use a -S key as "
                "`dvc exp run` takes it, e.g. lr or train.matryoshka_weights"
            )


def objective_keys(space: SearchSpace, summary: Mapping[str, float]) -> list[str]:
    """metrics/summary.json keys of the objectives: `full` is the largest dim, `smallest` the smallest."""
    dims = sorted((k for k in summary if re.fullmatch(r"d\d{4}", k)), key=lambda k: int(k[1:]))
    if not dims:
        raise TrialFailed(f"metrics/summary.json holds no dims ({sorted(summary)})")
    keys = []
    for name in space.objectives:
        key = dims[-1] if name == "full" else dims[0] if name == "smallest" else name
        if key not in summary:
            raise TrialFailed(f"objective {name}: metrics/summary.json has no {key} (it has {', '.join(dims)})")
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


def make_pruner(space: SearchSpace):
    import optuna

    cfg = dict(space.pruner)
    kind = cfg.get("type", "none")
    if kind == "none" or len(space.objectives) > 1:
        return optuna.pruners.NopPruner()
    if kind == "threshold":
        return optuna.pruners.ThresholdPruner(lower=float(cfg["lower"]))
    return optuna.pruners.MedianPruner(
        n_startup_trials=int(cfg.get("startup_trials", 4)), n_warmup_steps=int(cfg.get("warmup_epochs", 1))
    )


def storage(url: str):
    """Optuna's RDB storage with heartbeats: a trial whose worker died (killed, machine lost) is marked FAIL by
    the next worker that asks for a trial, after `grace` seconds without a beat."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats: since Optuna 2.9
    return optuna.storages.RDBStorage(url, heartbeat_interval=20, grace_period=90)


def load_study(space: SearchSpace, url: str, attempts: int = 5):
    """The study (created by the first worker). Workers started at the same moment on a new storage race to
    create Optuna's tables: the loser's IntegrityError is retried."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial: our one line, not its traceback
    for attempt in range(attempts):
        try:
            return optuna.create_study(
                storage=storage(url),
                study_name=space.study,
                directions=["maximize"] * len(space.objectives),
                sampler=make_sampler(space),
                pruner=make_pruner(space),
                load_if_exists=True,
            )
        except ValueError as err:  # a study of this name with other directions
            raise PipelineError(f"study '{space.study}' in {shown_url(url)}: {err}") from None
        except IntegrityError:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0 + attempt)
        except OperationalError as err:
            first = str(err.orig or err).strip().splitlines()[0]
            raise PipelineError(
                f"study storage {shown_url(url)} is unreachable ({first}); start it or pass --storage"
            ) from None
    raise AssertionError("unreachable")


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

    def name(self, trial) -> str:
        return f"{self.space.study}-{trial.number:03d}"

    def command(self, trial, values: Mapping[str, Any]) -> list[str]:
        sets = [f"{k}={_override_text(v)}" for k, v in values.items()]
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
        log_file = self.repo / TRIAL_LOGS / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        shown = " ".join(f"{k}={_override_text(v)}" for k, v in values.items())
        print(f"trial {trial.number}: {name}  {shown}  (log: {log_file.relative_to(self.repo)})", flush=True)
        started = time.monotonic()
        state = "FAIL"
        try:
            with log_file.open("w") as log:
                proc = subprocess.Popen(
                    self.command(trial, values),
                    cwd=self.repo,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group, stopped as a whole (_stop)
                    preexec_fn=parent_death_signal,  # a killed worker leaves no trial running
                )
                try:
                    self._watch(trial, proc, name)
                except BaseException:
                    self._stop(proc)
                    raise
            if proc.returncode != 0:
                raise TrialFailed(f"dvc exp run exited {proc.returncode}: {_error_line(log_file)}")
            commit = experiment_commit(name, self.repo)
            summary = json.loads(git("show", f"{commit}:{self.summary_file}", cwd=self.repo))
            keys = objective_keys(self.space, summary)
            trial.set_user_attr("commit", commit)
            trial.set_user_attr("objective_keys", keys)
            result = [float(summary[k]) for k in keys]
            if self.push:
                self._push(trial, name)
            state = "COMPLETE"
            minutes = (time.monotonic() - started) / 60
            print(f"trial {trial.number}: {', '.join(f'{k} {v:.4f}' for k, v in zip(keys, result, strict=True))} "
                  f"({minutes:.1f} min)", flush=True)  # fmt: skip
            return result if len(result) > 1 else result[0]
        except _Pruned:
            state = "PRUNED"
            import optuna

            print(f"trial {trial.number}: pruned (dev NDCG@10 behind the other trials at this epoch)", flush=True)
            raise optuna.TrialPruned() from None
        except TrialFailed as err:
            trial.set_user_attr("error", str(err)[:1000])
            print(f"trial {trial.number}: failed: {err}", flush=True)
            raise
        except Interrupted as err:
            self.interrupted, self.stopped_trial = err, trial.number
            trial.set_user_attr("error", f"stopped by {err}")
            raise KeyboardInterrupt(str(err)) from None  # Optuna marks a KeyboardInterrupt's trial FAIL, re-raises
        finally:
            self._tag(
                name, {"search.study": self.space.study, "search.trial": str(trial.number), "search.state": state}
            )

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


def trial_rows(study) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({
            "trial": t.number,
            "state": t.state.name,
            "experiment": t.user_attrs.get("experiment", ""),
            "host": t.user_attrs.get("host", ""),
            "values": list(t.values) if t.state == TrialState.COMPLETE and t.values else None,
            "params": dict(t.params),
            "error": t.user_attrs.get("error"),
        })  # fmt: skip
    return rows


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
                      *(_override_text(t.params.get(n, "")) if not isinstance(t.params.get(n), float)
                        else f"{t.params[n]:.3g}" for n in names)])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    for i, key in enumerate(keys):
        top = max(best, key=lambda t: t.values[i])
        lines.append(f"best at {key}: trial {top.number} ({top.user_attrs.get('experiment', '')}, {top.values[i]:.4f})")
    pick = best[0].user_attrs.get("experiment", "<experiment>")
    lines.append(f"take one: dvc exp apply {pick} && dvc pull   (from another clone: dvc exp pull origin {pick} first)")
    return "\n".join(lines)
