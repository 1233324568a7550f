"""The Japanese catalogue is complete, compiled, up to date, and the pages use it."""

import ast
import gettext
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse
from django.utils import translation
from pytest_django.asserts import assertContains, assertRedirects

from tests.conftest import ISSUER, make_order
from tracker import stages
from tracker.templatetags.tracker import ago

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "tracker" / "locale" / "ja" / "LC_MESSAGES"
_LINE = re.compile(r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?)\s+(".*")$')


def read_po(path: Path) -> list[dict]:
    """A .po file as {"msgid", "msgid_plural", "msgstr": [...], "fuzzy"}, header left out."""
    entries, entry, key = [], None, None
    for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
        if not line.strip():
            if entry:
                entries.append(entry)
            entry = None
            continue
        entry = entry or {"msgid": "", "msgid_plural": None, "msgstr": [], "fuzzy": False}
        if line.startswith("#,"):
            entry["fuzzy"] |= "fuzzy" in line
        elif line.startswith("#"):
            continue
        elif match := _LINE.match(line):
            key, text = match.group(1), ast.literal_eval(match.group(2))
            if key.startswith("msgstr"):
                entry["msgstr"].append(text)
            else:
                entry[key] = text
        else:  # continuation of the previous string
            text = ast.literal_eval(line)
            if key.startswith("msgstr"):
                entry["msgstr"][-1] += text
            else:
                entry[key] += text
    return [e for e in entries if e["msgid"]]


def test_every_japanese_message_is_translated_and_none_is_fuzzy():
    entries = read_po(CATALOGUE / "django.po")
    assert len(entries) > 200
    untranslated = [e["msgid"] for e in entries if not all(e["msgstr"])]
    fuzzy = [e["msgid"] for e in entries if e["fuzzy"]]
    assert untranslated == []
    assert fuzzy == []


def test_the_compiled_catalogue_matches_the_po_file():
    # A stale .mo would silently show older texts: compile after editing (make messages).
    with (CATALOGUE / "django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for entry in read_po(CATALOGUE / "django.po"):
        if entry["msgid_plural"]:
            assert compiled.ngettext(entry["msgid"], entry["msgid_plural"], 1) == entry["msgstr"][0]
        else:
            assert compiled.gettext(entry["msgid"]) == entry["msgstr"][0], entry["msgid"]


@pytest.mark.skipif(not shutil.which("xgettext"), reason="gettext's xgettext is not installed")
def test_the_catalogue_holds_every_message_the_code_marks(tmp_path, monkeypatch):
    # makemessages writes into any locale/ directory it walks past, so it runs on a copy.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "tracker", source / "tracker", ignore=shutil.ignore_patterns("locale"))
    monkeypatch.chdir(source)
    with override_settings(LOCALE_PATHS=[tmp_path / "locale"]):
        call_command("makemessages", locale=["ja"], no_location=True, verbosity=0)
    fresh = {e["msgid"] for e in read_po(tmp_path / "locale" / "ja" / "LC_MESSAGES" / "django.po")}
    committed = {e["msgid"] for e in read_po(CATALOGUE / "django.po")}
    assert len(fresh) > 200
    assert fresh - committed == set(), "run `make messages` and translate the new messages"
    assert committed - fresh == set(), "run `make messages` to drop messages no longer used"


@pytest.mark.django_db
def test_the_card_page_renders_in_japanese(agent_client):
    make_order(card_id="crd-ja", stage="CARD_SHIPPED", stage_rank=60, terminal=True)
    agent_client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ja"
    response = agent_client.get(reverse("tracker:card_detail", args=[ISSUER, "crd-ja"]))
    assertContains(response, '<html lang="ja">')
    assertContains(response, "発送済み")
    assertContains(response, "次の対応")
    assertContains(response, "お客様への説明")
    with translation.override("ja"):
        assertContains(response, str(stages.STAGES["CARD_SHIPPED"].tell_customer))
    assertContains(response, "タイムライン")


@pytest.mark.django_db
def test_the_language_switch_works_before_and_after_logging_in(client, agent):
    login = reverse("login")
    response = client.post(reverse("set_language"), {"language": "ja", "next": login})
    assertRedirects(response, login, fetch_redirect_response=False)
    assertContains(client.get(login), "Tracker にログイン")
    client.force_login(agent)
    assertContains(client.get(reverse("tracker:search")), "カードを探す")


NOW = datetime(2025, 3, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "english", "japanese"),
    [
        (timedelta(seconds=30), "just now", "たった今"),
        (timedelta(minutes=5), "5 min ago", "5 分前"),
        (timedelta(hours=3, minutes=20), "3 h ago", "3 時間前"),
        (timedelta(hours=47), "47 h ago", "47 時間前"),
        (timedelta(days=1, hours=1), "25 h ago", "25 時間前"),
        (timedelta(days=3), "3 days ago", "3 日前"),
        (timedelta(hours=-2), "in 2 h", "2 時間後"),
        (timedelta(days=-3), "in 3 days", "3 日後"),
    ],
)
def test_relative_times_are_short_and_translated(delta, english, japanese):
    with translation.override("en"):
        assert ago(NOW - delta, NOW) == english
    with translation.override("ja"):
        assert ago(NOW - delta, NOW) == japanese


def test_one_day_ago_is_singular():
    with translation.override("en"):
        assert ago(NOW - timedelta(days=2), NOW) == "2 days ago"
        assert ago(NOW - timedelta(hours=49), NOW) == "2 days ago"
