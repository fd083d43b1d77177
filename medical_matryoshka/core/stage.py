"""One DVC stage's view of params.yaml: exactly the keys dvc.yaml declares for it.

dvc.yaml is the single list of what a stage reads: DVC reruns the stage when one of those keys changes,
the stage may read only those keys (anything else is an error), and it logs exactly those to MLflow
(core/tracking/; the pipeline's shape comes from core/pipeline.py).
"""

from __future__ import annotations

import dataclasses
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from medical_matryoshka.core.errors import PipelineError, on_failure
from medical_matryoshka.core.params import PARAMS_FILE, RECOMPOSE, load_params
from medical_matryoshka.core.pipeline import PIPELINE_FILE, declared_params, final_stages, stage_outputs
from medical_matryoshka.core.schema import top_level
from medical_matryoshka.core.sections import (
    SECTIONS,
    ModelConfig,
    PathsConfig,
    TrackingConfig,
    check_params,
    read_section,
)


def select(params: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The part of `params` that the dotted `keys` name, nested as in params.yaml."""
    picked: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        source, target = params, picked
        for part in parents:
            if not isinstance(source.get(part), dict):
                raise PipelineError(f"params.yaml has no '{key}' (declared in dvc.yaml); {RECOMPOSE}")
            source, target = source[part], target.setdefault(part, {})
        if leaf not in source:
            raise PipelineError(f"params.yaml has no '{key}' (declared in dvc.yaml); {RECOMPOSE}")
        target[leaf] = source[leaf]
    return picked


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """A stage's declared params, typed on request, plus where it writes and tracks."""

    stage: str
    params: dict[str, Any]  # the declared keys only: what the stage reads and logs
    all_params: dict[str, Any]  # the whole params.yaml, for the pipeline's parent run
    paths: PathsConfig
    tracking: TrackingConfig
    final: bool  # the pipeline's last stage: its parent MLflow run is FINISHED when this one is
    tracked: bool  # False when the remote tracking server is down and tracking.unreachable is skip
    params_file: str | Path = PARAMS_FILE
    pipeline_file: str | Path = PIPELINE_FILE
    _run: list = dataclasses.field(default_factory=list)  # the stage's MLflow run, once opened (begin)

    @classmethod
    def load(
        cls,
        stage: str,
        params_file: str | Path = PARAMS_FILE,
        pipeline_file: str | Path = PIPELINE_FILE,
        begin: bool = True,
    ):
        """The stage's view of params.yaml; a remote tracking store is checked now, before any work, and the
        stage's MLflow run opened (`begin`; a stage that may hand its work to other processes opens it later).
        Wherever the stage then stops, its run ends FAILED or KILLED with the error line (errors.run_main)."""
        from medical_matryoshka.core.tracking.store import check_tracking

        try:
            params = load_params(params_file)
            sections = check_params(params)
        except PipelineError as err:
            raise PipelineError(
                f"{err} (`dvc checkout` restores outputs DVC removed before running the stage)"
            ) from None
        config = cls(
            stage,
            select(params, declared_params(stage, pipeline_file)),
            params,
            sections["paths"],
            sections["tracking"],
            stage in final_stages(pipeline_file),
            check_tracking(sections["tracking"].unreachable),
            params_file,
            pipeline_file,
        )
        if begin:
            config.begin()
        return config

    def begin(self):
        """Open this stage's MLflow run now (once); it ends with the stage, however the stage ends."""
        from medical_matryoshka.core.tracking.lifecycle import open_stage_run

        if not self._run:
            run = open_stage_run(self.stage, self.params, self.tracking.experiment, self.all_params, self.tracked)
            self._run.append(run)
            on_failure(lambda status, line: run.end(status, status, error=line))
        return self._run[0]

    def verify_params(self) -> None:
        """Stop if params.yaml no longer holds what this stage read at its start (another `dvc exp run -S ...`
        rewrote it meanwhile): DVC would record the new values beside outputs made with the old ones."""
        try:
            now = select(load_params(self.params_file), declared_params(self.stage, self.pipeline_file))
        except PipelineError as err:
            now, problem = None, str(err)
        if now == self.params:
            return
        if now is None:
            changed = problem
        else:
            from medical_matryoshka.core.tracking.identity import flatten

            before, after = flatten(self.params), flatten(now)
            diffs = [f"{k} {before.get(k, '(none)')} -> {after.get(k, '(none)')}" for k in {**before, **after}
                     if before.get(k) != after.get(k)]  # fmt: skip
            changed = ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        self.remove_outputs()
        raise PipelineError(
            f"{self.params_file} changed while stage '{self.stage}' ran ({changed}; another `dvc exp run -S ...` "
            "or an edit), so DVC would record params these outputs were not made with; they are removed and "
            "nothing is recorded: "
            f"rerun `dvc repro` (it runs with what {self.params_file} holds now), or restore it first "
            f"(`git checkout {self.params_file}`) for the run you started"
        )

    def _declared(self, key: str) -> Any:
        if key not in self.params:
            raise PipelineError(
                f"stage '{self.stage}' reads params '{key}', which dvc.yaml does not declare for it; "
                f"add it to stages.{self.stage}.params in dvc.yaml"
            )
        return self.params[key]

    def section(self, key: str, cls: type | None = None) -> Any:
        """The declared section `key` as its frozen dataclass (sections.SECTIONS; `cls` for a narrower view, such
        as prepare's ModelSource of `model`), with its top-level knobs (train's lr, epochs, ...), which must be
        declared too."""
        cls = cls or SECTIONS[key]
        for name in (key, *top_level(cls)):
            self._declared(name)
        return read_section(cls, self.params, key)

    def model(self) -> ModelConfig:
        """The declared `model` section at the max_seq_length `prepare` chose for the data (model.max_seq_length
        auto or fixed, read from <prepared>/<lengths_file>, a dependency of every stage after prepare)."""
        from medical_matryoshka.core.models import with_prepared_length

        return with_prepared_length(self.section("model"), self.paths)

    def sections(self, *keys: str) -> tuple[Any, ...]:
        """Several sections by key, in order: `model, eval = stage.sections("model", "eval")`."""
        return tuple(self.section(key) for key in keys)

    def seed(self) -> int:
        return int(self._declared("seed"))  # its type and range: checked with the whole file at load

    def outputs(self) -> list[Path]:
        """The stage's outs and metrics as dvc.yaml lists them, `${paths.*}` filled in from params.yaml."""
        return stage_outputs(self.stage, self.all_params, self.pipeline_file)

    def remove_outputs(self) -> None:
        """Put the stage's outputs back where DVC left them before running it: absent."""
        for path in self.outputs():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def track(self) -> AbstractContextManager:
        """This stage's MLflow run (logging its declared params), nested under the pipeline's parent run: it
        ends FINISHED when the block does, after checking that params.yaml still holds what the stage read."""
        from medical_matryoshka.core.tracking.lifecycle import stage_run

        return stage_run(
            self.stage,
            self.params,
            self.tracking.experiment,
            self.all_params,
            final=self.final,
            run=self.begin(),
            verify=self.verify_params,
        )
