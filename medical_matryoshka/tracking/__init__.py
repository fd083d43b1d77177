"""MLflow: a parent run per pipeline execution, a nested run per stage."""
