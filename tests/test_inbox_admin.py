"""The notification inbox in the admin site: supervisors read it, administrators replay."""

import json

import pytest
from django.urls import reverse

from tests.conftest import ISSUER, example, staff, stored_item
from tracker import inbox, roles
from tracker.models import CardOrder, InboxItem, Source, TimelineEvent

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:tracker_inboxitem_changelist")


def stored(body: bytes, *, processed: bool = True) -> InboxItem:
    item = stored_item(ISSUER, body, {"content-type": "application/json"})
    if processed:
        inbox.process(item.pk)
        item.refresh_from_db()
    return item


def replay(client, *items: InboxItem):
    form = {"action": "replay", "_selected_action": [item.pk for item in items]}
    return client.post(CHANGELIST, form, follow=True)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_administrators_list_the_inbox_and_filter_it_by_outcome_and_issuer(client):
    stored(json.dumps(example("07")).encode())
    stored(b"{not json")
    client.force_login(staff(roles.ADMINISTRATORS))
    everything = client.get(CHANGELIST)
    assert everything.status_code == 200
    assert everything.context["cl"].result_count == 2
    rejected = client.get(CHANGELIST, {"outcome__exact": "rejected"})
    assert [item.outcome for item in rejected.context["cl"].result_list] == ["rejected"]
    assert client.get(CHANGELIST, {"issuer": ISSUER}).context["cl"].result_count == 2


def test_the_body_is_shown_read_only_pretty_printed_with_its_results(client):
    item = stored(json.dumps(example("07"), separators=(",", ":")).encode())
    client.force_login(staff(roles.ADMINISTRATORS))
    page = client.get(reverse("admin:tracker_inboxitem_change", args=[item.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "\n  &quot;operations&quot;: [\n" in html  # indented, escaped
    assert "&quot;verdict&quot;: &quot;applied&quot;" in html
    assert 'name="_save"' not in html  # evidence is never edited, not even by administrators


def test_a_body_that_is_not_json_is_shown_as_text(client):
    item = stored(b"<html>\xff oops</html>")
    client.force_login(staff(roles.ADMINISTRATORS))
    html = client.get(reverse("admin:tracker_inboxitem_change", args=[item.pk])).content.decode()
    assert "&lt;html&gt;\ufffd oops&lt;/html&gt;" in html


def test_a_body_nested_too_deeply_to_read_is_shown_as_text(client):
    item = stored(b'{"operations": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}")
    client.force_login(staff(roles.ADMINISTRATORS))
    response = client.get(reverse("admin:tracker_inboxitem_change", args=[item.pk]))
    assert response.status_code == 200
    assert "[[[[" in response.content.decode()


def test_replay_applies_a_stored_body_with_source_replay_and_is_idempotent(client):
    item = stored(json.dumps(example("07")).encode(), processed=False)  # as after a failure
    client.force_login(staff(roles.ADMINISTRATORS))
    assert messages_of(replay(client, item)) == ["Replayed 1 notification: 1 applied."]
    event = TimelineEvent.objects.get()
    assert (event.source, event.inbox_id) == (Source.REPLAY, item.pk)
    assert CardOrder.objects.get().stage == "CARD_SHIPPED"

    assert messages_of(replay(client, item)) == ["Replayed 1 notification: 1 duplicate."]
    assert TimelineEvent.objects.count() == 1


def test_replay_reports_a_body_that_can_never_be_applied(client):
    good = stored(json.dumps(example("10")).encode())
    bad = stored(b"{not json")
    client.force_login(staff(roles.ADMINISTRATORS))
    [message] = messages_of(replay(client, good, bad))
    assert message == (
        "Replayed 2 notifications: 4 duplicate. 1 body can never be applied (see its error)."
    )


def test_supervisors_see_the_inbox_read_only_and_cannot_replay(client):
    item = stored(json.dumps(example("07")).encode(), processed=False)
    client.force_login(staff(roles.SUPERVISORS))
    listing = client.get(CHANGELIST)
    assert listing.status_code == 200
    assert b'value="replay"' not in listing.content
    detail = client.get(reverse("admin:tracker_inboxitem_change", args=[item.pk]))
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    replay(client, item)
    assert not TimelineEvent.objects.exists() and not CardOrder.objects.exists()


def test_the_inbox_filters_bodies_by_the_outcome_of_their_operations(client):
    stored(json.dumps(example("10")).encode())
    quarantined = example("10")
    quarantined["operations"][0]["cardId"] = "bad card id!"
    bad = stored(json.dumps(quarantined).encode())
    client.force_login(staff(roles.ADMINISTRATORS))
    page = client.get(CHANGELIST, {"operations": "quarantined"})
    assert [item.pk for item in page.context["cl"].result_list] == [bad.pk]
    # The same items again: duplicates, while the first body applied them.
    applied = client.get(CHANGELIST, {"operations": "applied"}).context["cl"].result_list
    assert [item.pk for item in applied] != [bad.pk] and len(applied) == 1
    duplicates = client.get(CHANGELIST, {"operations": "duplicate"}).context["cl"].result_list
    assert [item.pk for item in duplicates] == [bad.pk]
