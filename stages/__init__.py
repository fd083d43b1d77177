"""The DVC stage entry points, one module per stage of dvc.yaml (python -m stages.<name>)."""
