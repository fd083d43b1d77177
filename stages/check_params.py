"""Stage `check_params`: the whole params.yaml checked before any other stage runs.

Each stage checks only the params it reads, and DVC reruns a stage only when those change: alone, a bad
knob would surface late (`lr` at `train`, after `prepare` and `mine`) and an unknown one never (`-S +lrr=1`
is read by no stage, so nothing reruns and the experiment silently ignores it). This stage depends on the
whole params.yaml, and `prepare` on its stamp (whose content never changes, so it reruns nothing), so every
change to params.yaml is checked first, in about a second, and a bad one stops the pipeline in one line.

python -m stages.check_params STAMP
"""

from __future__ import annotations

import sys

from medical_matryoshka.atomic import write_json
from medical_matryoshka.config.params import load_params, section
from medical_matryoshka.config.sections import SECTIONS, check_known_keys, train_config
from medical_matryoshka.errors import PipelineError, run_main


def main() -> None:
    if len(sys.argv) != 2:
        raise PipelineError("usage: python -m stages.check_params STAMP (dvc.yaml runs it)")
    params = load_params()
    check_known_keys(params)
    for key, cls in SECTIONS.items():
        train_config(params) if key == "train" else section(cls, params, key)
    write_json(sys.argv[1], {"params.yaml": "checked"})  # the same bytes every time: reruns nothing downstream
    print("params.yaml: every section valid, no unknown key")


if __name__ == "__main__":
    run_main(main)
