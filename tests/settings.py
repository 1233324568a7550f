"""Settings for the test suite: the real ones, with test defaults for the environment."""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tracker")
os.environ.setdefault("D1_NOTIFY_AUTH", "bearer")
# On either database the tests run the applier themselves (tests.conftest.drain).
os.environ.setdefault("TRACKER_APPLY_INLINE", "0")

from tracker.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
