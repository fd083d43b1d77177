"""DVC stages of the medical Matryoshka embedding workflow (one module per stage plus shared helpers)."""
