"""What imports what: the app never needs the development tools; the sandbox needs no Django."""

import ast
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
DEV_ONLY = ("bench", "demo", "d1sandbox")


def _imported(package: str) -> dict[str, set[str]]:
    """Top-level names each module of the package imports, by the module's path."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_app_imports_none_of_the_development_tools():
    offending = {
        module: sorted(names & set(DEV_ONLY))
        for module, names in _imported("tracker").items()
        if names & set(DEV_ONLY)
    }
    assert offending == {}


@pytest.mark.parametrize("forbidden", ["django", "tracker", "bench", "demo"])
def test_the_sandbox_stands_alone(forbidden):
    assert [module for module, names in _imported("d1sandbox").items() if forbidden in names] == []


@pytest.mark.parametrize(
    "lock, groups", [("base.txt", ["dependencies"]), ("dev.txt", ["dependencies", "dev"])]
)
def test_the_lock_files_pin_every_dependency(lock, groups):
    # A dependency added to pyproject.toml without `make lock` would be missing from every venv.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"]]
    if "dev" in groups:
        wanted += project["dependency-groups"]["dev"]
    pinned = {
        canonicalize_name(line.split("==")[0])
        for line in (ROOT / "requirements" / lock).read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    missing = {canonicalize_name(Requirement(spec).name) for spec in wanted} - pinned
    assert missing == set(), "run `make lock` after changing the dependencies"
