"""Raw (anchor, positive) records from every source, by-document splits, leakage checks, statistics."""
