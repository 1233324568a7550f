"""The documentation keeps up with the code: every setting read is documented, every link resolves.

Settings are found by reading the source, not by importing it: a call of one of tracker/env.py's
readers (`env.string("NAME", …)`) or a read of `os.environ` / `os.getenv` with a literal name.
They count as documented when docs/settings.md, or a `## Settings` section of any other page
under docs/, has a table row naming them.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The code that runs in production or on an operator's command (the tests have their own).
SOURCES = ("tracker", "bench", "d1sandbox", "deploy", "manage.py")
# Names only the platform reads, set by the code itself before Django starts.
NOT_SETTINGS = {"DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"}

_NAME = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")


def _python_files() -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
    return [f for f in files if "migrations" not in f.parts]


def _env_readers() -> set[str]:
    """The public functions of tracker/env.py that take a variable's name first."""
    tree = ast.parse((ROOT / "tracker" / "env.py").read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and not node.name.startswith("_")
        and node.args.args
        and node.args.args[0].arg == "name"
    }


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def settings_read_by_the_code() -> dict[str, str]:
    """Each variable name the code reads, with the first place that reads it."""
    readers = _env_readers()
    found: dict[str, str] = {}
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
                call = (ast.unparse(node.func.value), node.func.attr)
                if (
                    (call[0] == "env" and call[1] in readers)
                    or call in {("os.environ", "get"), ("os.environ", "pop")}
                    or call == ("os", "getenv")
                ):
                    name = _literal(node.args[0])
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.ctx, ast.Load)
                and ast.unparse(node.value) == "os.environ"
            ):
                name = _literal(node.slice)
            if name and name not in NOT_SETTINGS:
                found.setdefault(name, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def _table_names(text: str) -> set[str]:
    """Names in the first cell of each table row."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("|"):
            names.update(_NAME.findall(line.split("|")[1]))
    return names


def _settings_sections(text: str) -> str:
    """The `## Settings` sections of a page (any level), each up to the next heading as high."""
    sections: list[str] = []
    level = 0  # of the Settings heading we are in; 0: outside
    for line in _FENCE.sub("", text).splitlines():
        if heading := re.match(r"(#{1,6}) (.+)", line):
            depth = len(heading.group(1))
            if heading.group(2).strip().lower() == "settings":
                level = depth
            elif depth <= level:
                level = 0
        elif level:
            sections.append(line)
    return "\n".join(sections)


def documented_settings() -> dict[str, str]:
    documented = dict.fromkeys(_table_names((DOCS / "settings.md").read_text()), "settings.md")
    for page in sorted(DOCS.rglob("*.md")):
        for name in _table_names(_settings_sections(page.read_text())):
            documented.setdefault(name, str(page.relative_to(DOCS)))
    return documented


def test_the_scan_finds_settings_read_every_way():
    read = settings_read_by_the_code()
    # env.integer(...) in settings.py, a multi-line env.string(...) call, os.environ.get(...).
    assert {"D1_MAX_RPS", "D1_JWT_PRIVATE_KEY_FILE", "DJANGO_SECRET_KEY"} <= read.keys()
    assert len(read) > 60


def test_every_setting_the_code_reads_is_documented():
    undocumented = {
        name: where
        for name, where in settings_read_by_the_code().items()
        if name not in documented_settings()
    }
    assert not undocumented, (
        "settings read by the code but in no table of docs/settings.md (or a '## Settings'"
        f" section of another page under docs/): {undocumented}"
    )


def test_every_setting_in_the_settings_page_is_read_by_the_code():
    read = settings_read_by_the_code()
    listed = _table_names((DOCS / "settings.md").read_text())
    assert not listed - read.keys(), (
        f"docs/settings.md lists what no code reads: {listed - read.keys()}"
    )


# --- Links ----------------------------------------------------------------------------------


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _slug(heading: str) -> str:
    """The anchor a heading gets on GitHub: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in _FENCE.sub("", page.read_text()).splitlines():
        if match := re.match(r"#{1,6} (.+)", line):
            slug = _slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def relative_links(page: Path) -> list[str]:
    text = _CODE_SPAN.sub("", _FENCE.sub("", page.read_text()))
    return [
        target
        for target in _LINK.findall(text)
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)  # https:, mailto:, …
    ]


def test_the_link_scan_sees_links_and_headings():
    assert "docs/settings.md" in relative_links(ROOT / "README.md")
    assert "the-d1-client" in anchors(DOCS / "settings.md")


@pytest.mark.parametrize("page", _pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"
