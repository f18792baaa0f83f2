"""Studies over many runs: compare, compare --mode fl, tune (runs as fedmist subprocesses)."""
