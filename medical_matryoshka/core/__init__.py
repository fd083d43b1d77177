"""What every stage runs on: params.yaml as typed sections and each stage's view of it (params, sections,
stage), MLflow tracking, model loading, errors, atomic writes and the stage's lifetime.

dvc.yaml lists this folder once per stage, beside the stage's own modules: a change here reruns every stage.
"""
