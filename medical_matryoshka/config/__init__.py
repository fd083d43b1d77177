"""params.yaml as typed, validated, frozen sections, and each stage's view of it as declared in dvc.yaml."""
