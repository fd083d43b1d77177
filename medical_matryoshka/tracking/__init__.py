"""MLflow: a parent run per pipeline execution, a nested run per stage, the trainer's log callback."""
