"""Retrieval metrics at every Matryoshka dimension from one encoding pass, and the trainer's dev evaluator."""
