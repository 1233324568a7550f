"""The D1 sandbox: a separate HTTP server that plays Thales D1 for the demo, the tests and the
benchmarks. It keeps its own in-memory state and never touches Tracker's database.

- server.py   the HTTP server (stdlib ThreadingHTTPServer), startable in-process on port 0
- api.py      what D1 serves: the token endpoint, productionStatus, ordering, with injected faults
- control.py  the control API under /_sandbox/ (seed cards, advance time, set faults, read logs)
- remote.py   a small Python client for the control API (tests, the demo)
- lifecycle.py  how an ordered card walks D1's stages, time-scaled
- pusher.py   notifications pushed to Tracker like D1 does (bulk, duplicates, reordering, drops)
- state.py, config.py, auth.py, keys.py   storage, knobs, assertion checks, key pairs
"""
