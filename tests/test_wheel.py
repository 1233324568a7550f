"""The wheel: `pip install` of the built package (not editable) gives a working app on its own.

The wheel is built from a copy of what it is made of (pyproject.toml, README.md, tracker/) and
installed without its dependencies into a fresh virtualenv, which borrows them from this one; the
app then runs from the installed package only, outside the repository.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

# Rendered by the installed package with production settings (DJANGO_DEBUG=0).
RENDER_LOGIN = textwrap.dedent(
    """
    import django
    from django.test import Client

    django.setup()
    import tracker

    response = Client().get(
        "/accounts/login/", headers={"accept-language": "ja"}, secure=True
    )
    print(tracker.__file__)
    print(response.status_code)
    print(response.content.decode())
    """
)


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed; returns its python."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "tracker", source / "tracker", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        + ["--wheel-dir", str(dist), str(source)]
    )
    wheel = next(dist.glob("d1_card_tracker-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    # The app alone: no sandbox, benchmark, demo or tests.
    assert {top for top in tops if not top.endswith(".dist-info")} == {"tracker"}
    venv.create(tmp / "venv", with_pip=False)
    python = tmp / "venv" / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
         + ["--no-deps", "--no-index", str(wheel)])  # fmt: skip
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    # The dependencies come from this virtualenv, after the fresh one's own packages.
    (Path(purelib.stdout.strip()) / "dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    return python


def test_the_installed_wheel_renders_the_login_page_in_japanese(installed, tmp_path):
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "D1_", "DATABASE_", "TRACKER_", "REDIS_", "PYTHON"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="tracker.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="wheel-test-" + "k" * 50,
        DJANGO_ALLOWED_HOSTS="testserver",
        DJANGO_STATIC_ROOT=str(tmp_path / "static"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        D1_NOTIFY_CLIENT_SECRET="wheel-test-secret",
    )
    in_venv = {"cwd": tmp_path, "env": env}
    _run([installed, "-m", "django", "migrate", "--noinput", "-v", "0"], **in_venv)
    _run([installed, "-m", "django", "collectstatic", "--noinput", "-v", "0"], **in_venv)
    assert (tmp_path / "static" / "staticfiles.json").exists()

    lines = _run([installed, "-c", RENDER_LOGIN], **in_venv).stdout.splitlines()
    module, status, page = lines[0], lines[1], "\n".join(lines[2:])

    assert module.startswith(str(installed.parent.parent)), "tracker came from the repository"
    assert status == "200"
    assert '<html lang="ja">' in page
    assert "Tracker にログイン" in page
    # Static files are served under their hashed names from the collected manifest.
    assert "/static/tracker/app." in page
    assert "/static/tracker/app.css" not in page
