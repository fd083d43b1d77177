"""Matryoshka fine-tuning with sentence-transformers' trainer: data, loss, arguments, model surgery, runtime,
callbacks."""
