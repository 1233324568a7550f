"""Playwright (sync API) against pytest-django's live server, with Debian's Chromium.

`make test` installs /usr/bin/chromium (as root) and axe-core (npm); without them these tests
skip and say why. Playwright's sync API runs an event loop in the test thread, which Django's
async-safety check refuses, so DJANGO_ALLOW_ASYNC_UNSAFE is set while (and only while) the
browser runs: a leaked value would fail `check --deploy` in tests that start manage.py.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / "test-artifacts"
PASSWORD = "agent-browser-pw"
CONTEXT = {
    "viewport": {"width": 1360, "height": 900},
    "timezone_id": "Asia/Tokyo",
    "locale": "en-GB",
}


@pytest.fixture(scope="module")
def chromium() -> Iterator:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing (make test installs Debian's chromium as root)")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium) -> Iterator:
    """A fresh browser profile (cookies, storage) in Tokyo time, under the strict CSP."""
    context = chromium.new_context(**CONTEXT)
    yield context.new_page()
    context.close()


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
