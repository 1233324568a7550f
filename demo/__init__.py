"""The demo: its data (data.py) and the `demo` and `d1_sandbox` commands.

A development app: tracker/settings.py installs it only with DJANGO_DEBUG=1, and the wheel does not
ship it.
"""
