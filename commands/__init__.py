"""Helper commands that are not DVC stages: fetch the raw data, compose params.yaml, write the card ref."""
