"""notifier's benchmarks: one module per scenario, sharing one toolkit (`toolkit.py`, which
gathers `bench.py`, `endpoints.py`, `readers.py`, `figures.py` and `sizes.py`).

Run them with `scripts/bench` (or `PYTHONPATH=scripts python -m benchmarks`); `--help` lists
the options. Everything runs for real on this machine: a redis-server of the bench's own, the
partner endpoints in a separate process, and notifier as `notifier router|deliver|run`
subprocesses. See README.md, "Benchmarks", for what each figure means.
"""
