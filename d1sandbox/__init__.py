"""The D1 sandbox: a separate HTTP server that plays Thales D1 for the demo, the tests and the
benchmarks. It keeps its own in-memory state and never touches Tracker's database.

Run it with `python -m d1sandbox --public-key FILE` (no Django needed), or in development with
`manage.py d1_sandbox`, which takes the key and credentials from Tracker's settings.

- server.py   the HTTP server (stdlib ThreadingHTTPServer), startable in-process on port 0
- cli.py      the command line both entry points share (__main__.py, demo's d1_sandbox)
- api.py      what D1 serves: the token endpoint, productionStatus, ordering, with injected faults
- control.py  the control API under /_sandbox/ (seed cards, advance time, set faults, read logs)
- remote.py   a small Python client for the control API (tests, the demo)
- lifecycle.py  how an ordered card walks D1's stages, time-scaled
- pusher.py   notifications pushed to Tracker like D1 does (bulk, duplicates, reordering, drops)
- state.py, config.py, auth.py, keys.py   storage, knobs, assertion checks, key pairs
"""
