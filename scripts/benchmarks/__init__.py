"""notifier's benchmarks: one module per scenario, around what they share: `bench.py` (the
bench's processes, partners, events and waits), `sizes.py` (how big each scenario is, the
events published, the errors that stop a scenario), `measurement.py` (the throughput
measurement most scenarios make), `endpoints.py` (the partner endpoints' process), `meters.py`
(CPU, memory, Redis's accounts), `figures.py` (the table's rows) and `machine.py` (the commit
and machine measured).

Run them with `scripts/bench` (or `PYTHONPATH=scripts python -m benchmarks`); `--help` lists
the options. Everything runs for real on this machine: a redis-server of the bench's own, the
partner endpoints in a separate process, and notifier as `notifier router|deliver|run`
subprocesses. See README.md, "Benchmarks", for what each figure means.
"""
