"""The benchmark harness behind `make bench` (docs/benchmark.md).

One module per scenario, each measuring the budget its issue names against real processes
(gunicorn with production settings, the D1 sandbox, db_worker) on a PostgreSQL database of its own:

- notifications, pages, queue, reconcile.

Shared pieces: `db` (bench databases), `data` (the order generator), `procs` (the processes),
`http` (a minimal HTTP/1.0 client), `loadgen` (the load generator, run as a process of its own),
`report` (checks, statistics, machine facts, the table and the JSON file).
"""
