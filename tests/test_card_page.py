from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from pytest_django.asserts import assertContains, assertNotContains, assertRedirects

from tests.conftest import ISSUER, make_order, op
from tracker import ingest, sla, stages
from tracker.d1 import lifecycle
from tracker.models import CardOrder, LookupAudit, Source, TimelineEvent

pytestmark = pytest.mark.django_db

CARD = "crd-page-0001"
URL = reverse("tracker:card_detail", args=[ISSUER, CARD])
T0 = datetime(2025, 3, 4, 8, 41, 12, tzinfo=UTC)


def at_stage(stage: str, **overrides) -> CardOrder:
    return make_order(
        stage=stage,
        stage_rank=lifecycle.rank(stage),
        terminal=lifecycle.is_terminal(stage),
        **overrides,
    )


def assert_situation(response, situation: stages.Situation) -> None:
    for text in (situation.next_step, situation.tell_customer, situation.meaning):
        assertContains(response, escape(str(text)))


def site_today(zone: str = "UTC"):
    return timezone.now().astimezone(sla.site_timezone(zone)).date()


# --- What the agent reads: stage, meaning, next step, what to tell the customer ------------


@pytest.mark.parametrize("stage", list(stages.STAGES))
def test_every_known_stage_has_a_badge_its_meaning_a_next_step_and_words_for_the_customer(
    agent_client, stage
):
    at_stage(stage)
    response = agent_client.get(URL)
    situation = stages.STAGES[stage]
    assertContains(
        response, f'<span class="badge badge--{situation.tone}">{situation.label}</span>'
    )
    assert_situation(response, situation)
    assertContains(response, "Next step")
    assertContains(response, "Tell the customer")


@pytest.mark.parametrize(
    ("stage", "tone"),
    [
        ("CARD_PROD_ONGOING", "progress"),
        ("CARD_SHIPPED", "done"),
        ("DATA_EXCEPTION", "exception"),
        ("CARD_PROD_CANCELED", "exception"),
        ("CARD_PROD_EXCEPTION", "exception"),
        ("CARD_RETURNED", "exception"),
    ],
)
def test_the_stage_tone_sets_colour_and_icon_together(stage, tone):
    # The CSS gives every tone both a colour and an icon shape (static/tracker/app.css).
    assert stages.STAGES[stage].tone == tone


def test_an_unrecognized_status_shows_verbatim_and_its_guidance_wins(agent_client):
    at_stage("CARD_PROD_READY", unrecognized_status="CARD_PROD_ON_HOLD")
    response = agent_client.get(URL)
    assertContains(response, "Unrecognized status <code>CARD_PROD_ON_HOLD</code>")
    assertContains(response, '<span class="badge badge--progress">Queued for production</span>')
    assert_situation(response, stages.UNRECOGNIZED)


def test_an_unrecognized_first_status_leaves_no_stage_and_asks_for_a_supervisor(agent_client):
    make_order(card_id=CARD, unrecognized_status="CARD_PROD_SOMETHING_NEW")
    response = agent_client.get(URL)
    assertContains(response, '<span class="badge badge--none">No stage yet</span>')
    assert_situation(response, stages.UNRECOGNIZED)


def test_an_unrecognized_status_after_shipping_keeps_the_shipped_guidance(agent_client):
    at_stage("CARD_SHIPPED", unrecognized_status="CARD_DELIVERED")
    response = agent_client.get(URL)
    assertContains(response, "Unrecognized status <code>CARD_DELIVERED</code>")
    assertContains(response, escape(str(stages.STAGES["CARD_SHIPPED"].next_step)))


def test_a_conflict_is_flagged_and_its_guidance_overrides_the_stage(agent_client):
    at_stage("DATA_EXCEPTION", conflict=True, error_code="FIELD_INVALID_VALUE")
    response = agent_client.get(URL)
    assertContains(response, '<span class="badge badge--attention">Conflict</span>')
    assertContains(response, '<span class="badge badge--exception">Data rejected</span>')
    assert_situation(response, stages.CONFLICT)


def test_an_order_without_a_stage_says_so(agent_client):
    make_order(card_id=CARD)
    response = agent_client.get(URL)
    assertContains(response, '<span class="badge badge--none">No stage yet</span>')
    assert_situation(response, stages.NO_STAGE)
    assertContains(response, "No events received for this card yet.")


def test_an_exception_shows_error_code_error_and_reason(agent_client):
    at_stage(
        "CARD_PROD_EXCEPTION",
        error_code="PERSO_FAILURE",
        error="Chip personalization failed",
        reason="Le module n'a pas répondu <deux fois>",
    )
    response = agent_client.get(URL)
    assertContains(response, "What D1 reported")
    assertContains(response, '<dd class="mono">PERSO_FAILURE</dd>')
    assertContains(response, "<dd>Chip personalization failed</dd>")
    assertContains(response, "Le module n&#x27;a pas répondu &lt;deux fois&gt;")


def test_the_progress_steps_mark_the_current_stage(agent_client):
    at_stage("CARD_PROD_ONGOING")
    response = agent_client.get(URL)
    assertContains(response, 'class="step step--current" aria-current="step">In production')
    assertContains(response, 'class="step step--done">Queued for production')
    assertContains(response, 'class="step step--todo">Produced')


def test_the_facts_show_identifiers_site_and_times(agent_client):
    at_stage(
        "CARD_PROD_DONE",
        production_site="PC-FR-GEM-01",
        issuer_request_id="ord-77",
        customer_reference="CUST-77",
        operation_id="op-77",
        input_file_name="CI_77.json",
        operation_status="PENDING",
        start_time=T0,
    )
    response = agent_client.get(URL)
    for text in ("PC-FR-GEM-01", "ord-77", "CUST-77", "op-77", "CI_77.json", "PENDING"):
        assertContains(response, text)
    assertContains(response, '<time datetime="2025-03-04T08:41:12+00:00"')
    assertContains(response, "never")  # never checked live


def test_an_order_d1_said_it_does_not_know_has_a_banner(agent_client):
    at_stage("CARD_PROD_REQUESTED", unknown_to_d1=True)
    assertContains(agent_client.get(URL), "D1 answered that it does not know this card")


# --- SLA --------------------------------------------------------------------------------------


def test_an_order_due_later_is_on_time(agent_client):
    due = site_today() + timedelta(days=2)
    at_stage("CARD_PROD_READY", due_date=due, late_after=sla.late_after(due, None, ""))
    response = agent_client.get(URL)
    assertContains(response, '<span class="badge sla sla--on_time">On time</span>')
    assertContains(response, due.isoformat())


def test_an_order_due_today_says_so(agent_client):
    due = site_today()
    at_stage("CARD_PROD_READY", due_date=due, late_after=sla.late_after(due, None, ""))
    assertContains(agent_client.get(URL), '<span class="badge sla sla--due_today">Due today</span>')


@pytest.mark.parametrize(("days", "words"), [(1, "Late by 1 day"), (3, "Late by 3 days")])
def test_a_late_order_says_by_how_many_days_and_what_to_do(agent_client, days, words):
    due = site_today() - timedelta(days=days)
    at_stage("CARD_PROD_ONGOING", due_date=due, late_after=sla.late_after(due, None, ""))
    response = agent_client.get(URL)
    assertContains(response, f'<span class="badge sla sla--late">{words}</span>')
    assertContains(response, "ask a supervisor to chase it")


@override_settings(D1_LATE_GRACE_HOURS=48.0)
def test_a_past_due_order_inside_the_grace_period_is_not_late_yet(agent_client):
    due = site_today() - timedelta(days=1)
    at_stage("CARD_PROD_ONGOING", due_date=due, late_after=sla.late_after(due, None, ""))
    assertContains(agent_client.get(URL), "sla--grace")


@override_settings(
    D1_PRODUCTION_SITE_TZ={"PC-KI": "Pacific/Kiritimati", "PC-PPG": "Pacific/Pago_Pago"}
)
def test_due_today_is_decided_in_the_production_sites_calendar(agent_client):
    # UTC+14 and UTC-11 are always on different calendar days.
    due = site_today("PC-KI")
    for card_id, site in (("crd-ki", "PC-KI"), ("crd-ppg", "PC-PPG")):
        make_order(
            card_id=card_id,
            stage="CARD_PROD_READY",
            stage_rank=30,
            production_site=site,
            due_date=due,
            late_after=sla.late_after(due, None, site),
        )
    kiritimati = agent_client.get(reverse("tracker:card_detail", args=[ISSUER, "crd-ki"]))
    pago_pago = agent_client.get(reverse("tracker:card_detail", args=[ISSUER, "crd-ppg"]))
    assertContains(kiritimati, "sla--due_today")
    assertContains(kiritimati, "(Pacific/Kiritimati)")
    assertContains(pago_pago, "sla--on_time")


def test_a_finished_order_is_no_longer_measured_against_its_due_date(agent_client):
    due = site_today() - timedelta(days=5)
    at_stage("CARD_SHIPPED", due_date=due, late_after=sla.late_after(due, None, ""))
    response = agent_client.get(URL)
    assertContains(response, "sla--closed")
    assertNotContains(response, "sla--late")


def test_an_order_without_a_due_date_says_so(agent_client):
    at_stage("CARD_PROD_REQUESTED")
    assertContains(agent_client.get(URL), '<span class="badge sla sla--no_due_date">No due date')


# --- Shipment ---------------------------------------------------------------------------------


def shipped(tracking_url: str) -> CardOrder:
    return at_stage(
        "CARD_SHIPPED",
        carrier="la-poste-colissimo",
        tracking_number="6A12345678901",
        shipment_status="InTransit",
        shipment_message="Colis en cours d'acheminement.",
        tracking_url=tracking_url,
    )


def test_a_shipped_card_shows_carrier_tracking_number_and_an_https_tracking_link(agent_client):
    shipped("https://www.laposte.fr/outils/suivre-vos-envois?code=6A12345678901")
    response = agent_client.get(URL)
    assertContains(response, "La Poste Colissimo")
    assertContains(response, "6A12345678901")
    assertContains(response, "<strong>InTransit</strong> — Colis en cours d&#x27;acheminement.")
    assertContains(
        response,
        '<a href="https://www.laposte.fr/outils/suivre-vos-envois?code=6A12345678901" '
        'rel="noopener noreferrer" target="_blank">',
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://www.laposte.fr/track?code=1",
        "javascript:alert(1)",
        "//evil.example/track",
        "https://[::1",
        "",
    ],
)
def test_a_tracking_link_is_offered_only_for_https(agent_client, url):
    shipped(url)
    response = agent_client.get(URL)
    assertContains(response, "6A12345678901")
    assertNotContains(response, "Open the carrier's tracking page")
    assertNotContains(response, "javascript:")


# --- Timeline ---------------------------------------------------------------------------------


def build_timeline() -> CardOrder:
    """Every kind of entry, applied through the ingest as D1 would deliver them."""
    shipment = {
        "carrier": "dhl",
        "trackingNumber": "JD0001",
        "status": "InTransit",
        "message": "Parcel sorted at hub.",
        "trackingUrl": "https://www.dhl.com/track?id=JD0001",
    }
    deliveries = [
        (op("CARD_PROD_REQUESTED", cardId=CARD), Source.NOTIFICATION),
        (
            op(
                "CARD_SHIPPED",
                cardId=CARD,
                status="SUCCESSFUL",
                endTime="2025-03-05T10:00:00Z",
                details__shipment=shipment,
            ),
            Source.ON_DEMAND,
        ),
        (op("DATA_PREPARED", cardId=CARD), Source.RECONCILE),
        (op("CARD_PROD_QUALITY_REVIEW", cardId=CARD), Source.NOTIFICATION),
        (
            op(
                "DATA_EXCEPTION",
                cardId=CARD,
                status="FAILED",
                endTime="2025-03-05T11:00:00Z",
                errorCode="FIELD_INVALID_VALUE",
                error="Bad embossing line",
            ),
            Source.REPLAY,
        ),
    ]
    for minutes, (operation, source) in enumerate(deliveries):
        ingest.apply(ISSUER, operation, source, received_at=T0 + timedelta(minutes=minutes))
    order = CardOrder.objects.get(card_id=CARD)
    TimelineEvent.objects.create(
        order=order,
        content_hash="admin-1",
        source=Source.ADMIN,
        verdict="applied",
        received_at=T0 + timedelta(minutes=10),
        user=User.objects.create_user("ops-admin"),
        note="Customer called twice; escalated to D1 support.",
    )
    return order


def test_the_timeline_lists_every_event_newest_first_with_markers_and_sources(agent_client):
    build_timeline()
    response = agent_client.get(URL)
    html = response.content.decode()
    timeline = html[html.index('id="timeline"') :]
    order_seen = [
        timeline.index("Note by ops-admin:"),
        timeline.index("<code>DATA_EXCEPTION</code>"),
        timeline.index("<code>CARD_PROD_QUALITY_REVIEW</code>"),
        timeline.index("<code>DATA_PREPARED</code>"),
        timeline.index("<code>CARD_SHIPPED</code>"),
        timeline.index("<code>CARD_PROD_REQUESTED</code>"),
    ]
    assert order_seen == sorted(order_seen)
    assertContains(response, "6 events, newest first")
    assertContains(response, '<tr class="event event--conflict">')
    assertContains(response, '<span class="marker marker--conflict">Conflict</span>')
    assertContains(response, '<span class="marker marker--unrecognized">Unrecognized</span>')
    assertContains(response, '<span class="marker marker--stale">Stale</span>')
    for source in ("notification", "live", "reconcile", "replay", "admin"):
        assertContains(response, f"<td>{source}</td>")
    assertContains(response, "<strong>InTransit</strong> — Parcel sorted at hub.")
    assertContains(response, "<code>FIELD_INVALID_VALUE</code> Bad embossing line")
    assertContains(response, "Customer called twice; escalated to D1 support.")
    assertContains(response, "Administrator's change")


def test_each_event_shows_d1_time_and_received_time(agent_client):
    build_timeline()
    html = agent_client.get(URL).content.decode()
    shipped_row = html[html.index("<code>CARD_SHIPPED</code>") :].split("</tr>")[0]
    # D1's time is its endTime once the operation completed; received is our clock.
    assert '<time datetime="2025-03-05T10:00:00+00:00"' in shipped_row
    assert '<time datetime="2025-03-04T08:42:12+00:00"' in shipped_row


def test_times_are_shown_in_the_browsers_time_zone(agent_client):
    build_timeline()
    agent_client.cookies["tz"] = "Asia/Tokyo"
    response = agent_client.get(URL)
    assertContains(response, "Times in Asia/Tokyo")
    assertContains(response, '<time datetime="2025-03-04T17:41:12+09:00"')
    assertContains(response, ">2025-03-04 17:41</time>")


@override_settings(TRACKER_DISPLAY_TZ="Europe/Paris")
@pytest.mark.parametrize("cookie", [None, "Mars/Olympus_Mons", "../../etc/passwd", ""])
def test_without_a_valid_zone_cookie_times_use_the_display_setting(agent_client, cookie):
    build_timeline()
    if cookie is not None:
        agent_client.cookies["tz"] = cookie
    response = agent_client.get(URL)
    assertContains(response, "Times in Europe/Paris")
    assertContains(response, '<time datetime="2025-03-04T09:41:12+01:00"')


def test_events_carry_relative_times(agent_client):
    at_stage("CARD_PROD_REQUESTED", last_event_at=timezone.now() - timedelta(hours=3, minutes=5))
    assertContains(agent_client.get(URL), '<span class="ago">3 h ago</span>')


# --- HTMX fragments ---------------------------------------------------------------------------


def test_an_htmx_request_gets_only_the_timeline(agent_client):
    build_timeline()
    response = agent_client.get(URL, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="timeline"')
    assert "<html" not in html and 'id="card-header"' not in html
    assert "<code>CARD_SHIPPED</code>" in html


@pytest.mark.parametrize("target", ["card-header", "timeline", "card-banner"])
def test_an_htmx_request_gets_the_part_it_targets(agent_client, target):
    build_timeline()
    response = agent_client.get(URL, headers={"HX-Request": "true", "HX-Target": target})
    html = response.content.decode().lstrip()
    assert html.startswith(f'<section id="{target}"') or html.startswith(f'<div id="{target}"')
    assert "<html" not in html
    assert html.count(' id="card-header"') + html.count(' id="timeline"') <= 1


def test_the_full_page_holds_the_parts_live_updates_swap(agent_client):
    build_timeline()
    response = agent_client.get(URL)
    for part in ('<div id="card-banner"', '<section id="card-header"', '<section id="timeline"'):
        assertContains(response, part, count=1)


# --- Access, audit and cost -------------------------------------------------------------------


def test_the_card_page_asks_anonymous_users_to_log_in(client):
    make_order(card_id=CARD)
    assertRedirects(client.get(URL), f"{reverse('login')}?next={quote(URL)}")


def test_a_user_without_the_permission_gets_403_and_the_attempt_is_audited(outsider_client):
    make_order(card_id=CARD)
    response = outsider_client.get(URL)
    assertContains(response, "You are not allowed to see this page", status_code=403)
    assertNotContains(response, "card-header", status_code=403)
    audit = LookupAudit.objects.get()
    assert (audit.username, audit.outcome) == ("outsider", "denied")


def test_every_view_is_audited_with_user_card_action_and_outcome(agent_client, agent):
    make_order(card_id=CARD)
    agent_client.get(URL)
    agent_client.get(URL, headers={"HX-Request": "true"})
    agent_client.get(reverse("tracker:card_detail", args=[ISSUER, "crd-missing"]))
    rows = list(
        LookupAudit.objects.order_by("id").values_list(
            "user", "username", "issuer_id", "card_id", "action", "outcome"
        )
    )
    assert rows == [
        (agent.pk, "agent-test", ISSUER, CARD, "view", "found"),
        (agent.pk, "agent-test", ISSUER, CARD, "view", "found"),
        (agent.pk, "agent-test", ISSUER, "crd-missing", "view", "not_found"),
    ]
    assert all(
        timezone.now() - at < timedelta(minutes=1)
        for at in LookupAudit.objects.values_list("at", flat=True)
    )


def test_an_unknown_card_gets_a_404_in_the_same_look_with_a_way_to_search(agent_client):
    response = agent_client.get(reverse("tracker:card_detail", args=[ISSUER, "crd-missing"]))
    assertContains(response, "This card is not in Tracker", status_code=404)
    assertContains(response, 'href="/?q=crd-missing"', status_code=404)
    assertContains(response, 'class="topbar"', status_code=404)


@pytest.mark.parametrize(
    "path", ["/cards/SHORT/crd-1/", f"/cards/{ISSUER}/{'x' * 49}/", f"/cards/{ISSUER}/a.b/"]
)
def test_ids_d1_cannot_have_are_not_found_before_any_lookup(agent_client, path):
    response = agent_client.get(path)
    assertContains(response, "There is no page at this address.", status_code=404)
    assert not LookupAudit.objects.exists()


def test_the_audit_is_read_only_in_the_admin_site():
    model_admin = admin.site._registry[LookupAudit]
    request = RequestFactory().get("/admin/")
    request.user = User(is_superuser=True, is_staff=True, is_active=True)
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


# Session, user, permissions (the shared cache), order, events, audit INSERT.
PAGE_QUERIES = 6


@pytest.mark.parametrize("headers", [{}, {"HX-Request": "true"}])
def test_the_card_page_costs_the_same_for_one_event_or_two_hundred(
    agent_client, django_assert_num_queries, headers
):
    order = build_timeline()
    with django_assert_num_queries(PAGE_QUERIES):
        agent_client.get(URL, headers=headers)
    TimelineEvent.objects.bulk_create(
        TimelineEvent(
            order=order,
            content_hash=f"h{n}",
            source=Source.NOTIFICATION,
            verdict="applied",
            status="CARD_SHIPPED",
            shipment_status="InTransit",
            raw={"details": {"shipment": {"message": f"Scan {n}"}}},
            user=User.objects.create_user(f"u{n}") if n % 50 == 0 else None,
            note="checked" if n % 50 == 0 else "",
        )
        for n in range(200)
    )
    with django_assert_num_queries(PAGE_QUERIES):
        response = agent_client.get(URL, headers=headers)
    assertContains(response, "Scan 199")
    assertContains(response, "Note by u150:")


def test_a_runaway_timeline_shows_the_latest_events_and_says_so(agent_client, monkeypatch):
    monkeypatch.setattr("tracker.queries.TIMELINE_LIMIT", 3)
    order = make_order(card_id=CARD)
    TimelineEvent.objects.bulk_create(
        TimelineEvent(
            order=order,
            content_hash=f"h{n}",
            source=Source.NOTIFICATION,
            verdict="applied",
            status="CARD_SHIPPED",
            shipment_status=f"Scan-{n}",
            received_at=T0 + timedelta(minutes=n),
        )
        for n in range(5)
    )
    response = agent_client.get(URL)
    assertContains(response, "Only the latest 3 events are shown.")
    assertContains(response, "Scan-4")
    assertNotContains(response, "Scan-1")
