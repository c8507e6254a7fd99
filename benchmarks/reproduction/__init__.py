"""benchmarks/reproduce.py's parts, one idea each: `grid` trains the published cells, `report` writes their
report, `samples` is the sample-quality comparison (`--compare`), `subprocesses` runs the commands."""
