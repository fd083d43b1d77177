"""The library behind the DVC stages: data, negatives, training, retrieval scoring, tracking, config.

Pure functions and small classes; the stage entry points in stages/ read the config, call these and
write their outputs. Nothing happens at import time.
"""
