"""MLflow tracking: one parent run per pipeline execution, one nested run per stage.

A pipeline execution is a DVC experiment (DVC_EXP_NAME) or, for plain `dvc repro`, the git commit plus
the content of params.yaml. Each stage is its own process, so the parent is found by its tag (or created)
in the shared store. Nothing happens at import time. store.py: where the store is; identity.py: which
execution; run.py: the logging handle; sweep.py: runs whose process is gone; lifecycle.py: open and end.
"""
