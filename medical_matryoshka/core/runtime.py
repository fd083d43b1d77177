"""The one way a stage runs: `@stage_main("name")` over `def main(stage: StageConfig)`.

It gives the stage what every stage needs, in the order that keeps faults from sticking: signals and errors
handled (errors.run_main: one line and exit 2; SIGTERM/SIGINT end the run KILLED), the stage's life tied to
the `dvc` that started it (lifetime.die_with_parent), then its view of params.yaml with its MLflow run open
(StageConfig.load). The body reads its sections by key (`stage.sections("model", "eval")`), opens
`stage.track()` around the work that writes outputs, and returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from medical_matryoshka.core.errors import run_main
from medical_matryoshka.core.lifetime import die_with_parent
from medical_matryoshka.core.stage import StageConfig


def stage_main(name: str, *, begin: bool = True) -> Callable[[Callable[[StageConfig], None]], Callable[[], None]]:
    """`main()` for the dvc.yaml stage `name`. `begin=False`: the body opens the MLflow run itself (`stage.begin()`),
    as `train` does in the one process that trains."""

    def wrap(body: Callable[[StageConfig], None]) -> Callable[[], None]:
        @functools.wraps(body)
        def main() -> None:
            def run() -> None:
                die_with_parent()  # a killed `dvc` leaves no stage behind
                body(StageConfig.load(name, begin=begin))

            run_main(run)

        return main

    return wrap
