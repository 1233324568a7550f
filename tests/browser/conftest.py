"""Playwright (sync API) against pytest-django's live server, with Debian's Chromium.

`make test` installs /usr/bin/chromium (as root) and axe-core (npm); without them these tests
skip with the reason. Playwright's sync API runs an event loop in this thread, which Django's
async-safety check would refuse, hence DJANGO_ALLOW_ASYNC_UNSAFE before Django checks it.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "agent-browser-pw"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (make test installs Debian's chromium as root)")
    return {
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {
        **browser_context_args,
        "viewport": {"width": 1360, "height": 900},
        "timezone_id": "Asia/Tokyo",
        "locale": "en-GB",
    }


@pytest.fixture
def agent_login(transactional_db):
    """A support agent who can log in through the form; the groups are re-created first,
    because a transactional test's flush empties the tables the role migration filled."""
    from django.apps import apps
    from django.contrib.auth.models import Group, User

    from tracker import roles

    roles.sync_groups(apps)
    user = User.objects.create_user("agent-browser", password=PASSWORD, first_name="Aiko")
    user.groups.add(Group.objects.get(name=roles.AGENTS))
    return user.username, PASSWORD


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def log_in(page, base_url: str, credentials: tuple[str, str], path: str = "/") -> None:
    page.goto(base_url + path)
    page.get_by_label("Username").fill(credentials[0])
    page.get_by_label("Password").fill(credentials[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def serious_accessibility_violations(page) -> list[str]:
    """axe-core's serious and critical findings on the current page, one line each."""
    if not AXE.exists():
        pytest.skip("axe-core is missing: run `npm ci` (make test does)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at "
        + ", ".join(str(node["target"]) for node in violation["nodes"][:5])
        for violation in result["violations"]
        if violation["impact"] in ("serious", "critical")
    ]
