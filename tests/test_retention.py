"""Retention (`manage.py purge`): each kind of data goes at its age, in batches, and every fact
the pages show stays."""

import io
import json
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError
from django.db import connection, models
from django.tasks import TaskResultStatus
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from tests.conftest import ISSUER, make_order, run_command
from tracker import tasks
from tracker.models import (
    Alert,
    CardOrder,
    InboxItem,
    LookupAudit,
    LookupAuditDay,
    Outcome,
    Source,
    Sweep,
    TimelineEvent,
)
from tracker.ops import retention

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def ages(settings):
    settings.TRACKER_RETAIN_INBOX_BODIES = 30 * 86400
    settings.TRACKER_RETAIN_EVENT_RAW = 180 * 86400
    settings.TRACKER_RETAIN_LOOKUP_AUDIT = 90 * 86400
    settings.TRACKER_RETAIN_TASK_RESULTS = 7 * 86400
    settings.TRACKER_RETAIN_SWEEPS = 90 * 86400
    settings.TRACKER_RETAIN_ALERTS = 365 * 86400
    settings.TRACKER_RETAIN_TERMINAL_ORDERS = 365 * 86400


def _event(order: CardOrder, status: str, at, n: int) -> TimelineEvent:
    return TimelineEvent.objects.create(
        order=order,
        content_hash=f"{order.pk}-{n}",
        source=Source.NOTIFICATION,
        verdict=Outcome.APPLIED,
        received_at=at,
        status=status,
        raw={"details": {"status": status}},
    )


def test_each_kind_goes_at_its_own_age(ages):
    now = timezone.now()
    old_body = InboxItem.objects.create(issuer_id=ISSUER, body=b"{}", outcome="processed")
    waiting = InboxItem.objects.create(issuer_id=ISSUER, body=b"{}")
    new_body = InboxItem.objects.create(issuer_id=ISSUER, body=b"{}", outcome="processed")
    InboxItem.objects.filter(pk__in=[old_body.pk, waiting.pk]).update(received_at=now - 40 * DAY)
    order = make_order(card_id="crd-kept", last_event_at=now - 200 * DAY)
    old_event = _event(order, "CARD_PROD_REQUESTED", now - 200 * DAY, 1)
    new_event = _event(order, "CARD_PROD_DONE", now - DAY, 2)
    # Two reads in one (UTC) day long ago, one yesterday: whatever the hour the test runs at.
    long_ago = (now - 100 * DAY).replace(hour=9)
    for at in (long_ago, long_ago + timedelta(hours=1), now - DAY):
        LookupAudit.objects.create(
            username="amy", issuer_id=ISSUER, card_id="crd-kept", at=at, action="view",
            outcome="found",
        )  # fmt: skip
    tasks.recompute_attention.enqueue("CARD_PROD_DONE")
    DBTaskResult.objects.update(status=TaskResultStatus.SUCCESSFUL, finished_at=now - 8 * DAY)
    Sweep.objects.create(started_at=now - 100 * DAY, finished_at=now - 100 * DAY)
    Sweep.objects.create(finished_at=now)
    Alert.objects.create(
        rule="late_count", threshold=1, value=2, last_value=2, summary="s",
        started_at=now - 400 * DAY, resolved_at=now - 400 * DAY,
    )  # fmt: skip
    Alert.objects.create(rule="queue_size", threshold=1, value=2, last_value=2, summary="s")
    finished = make_order(card_id="crd-done", terminal=True, last_event_at=now - 400 * DAY)
    finished.first_seen_at = now - 400 * DAY
    finished.save()
    _event(finished, "CARD_SHIPPED", now - 400 * DAY, 1)

    archive = io.StringIO()
    done = {p.kind: p.rows for p in retention.purge(batch=2, archive=archive)}

    assert done == {
        "terminal_orders": 1,
        "inbox_bodies": 1,
        "event_raw": 1,  # the kept order's old event (the finished order left with its own)
        "lookup_audit": 2,
        "task_results": 1,
        "sweeps": 1,
        "alerts": 1,
    }
    assert bytes(InboxItem.objects.get(pk=old_body.pk).body) == b""
    assert bytes(InboxItem.objects.get(pk=waiting.pk).body) == b"{}"  # never processed: kept
    assert bytes(InboxItem.objects.get(pk=new_body.pk).body) == b"{}"
    old_event.refresh_from_db()
    new_event.refresh_from_db()
    assert (old_event.raw, old_event.status) == (None, "CARD_PROD_REQUESTED")
    assert new_event.raw == {"details": {"status": "CARD_PROD_DONE"}}
    [day] = LookupAuditDay.objects.all()
    assert (day.username, day.card_id, day.count) == ("amy", "crd-kept", 2)
    assert LookupAudit.objects.count() == 1
    assert Sweep.objects.count() == 1 and Alert.objects.get().rule == "queue_size"
    assert not CardOrder.objects.filter(card_id="crd-done").exists()
    assert not CardOrder.history.filter(card_id="crd-done").exists()  # no removal recorded
    [archived] = [json.loads(line) for line in archive.getvalue().splitlines()]
    assert (archived["cardId"], archived["history"][0]["stage"]) == ("crd-done", "CARD_SHIPPED")


def test_an_age_of_zero_keeps_a_kind_forever(ages, settings):
    settings.TRACKER_RETAIN_TERMINAL_ORDERS = 0
    make_order(card_id="crd-done", terminal=True, first_seen_at=timezone.now() - 900 * DAY)
    assert [p.rows for p in retention.purge(("terminal_orders",))] == [0]
    assert CardOrder.objects.count() == 1


def test_audit_days_add_up_across_runs(ages):
    at = (timezone.now() - 100 * DAY).replace(hour=9)  # both reads on one day
    for run in range(2):
        LookupAudit.objects.create(
            username="amy", issuer_id=ISSUER, card_id="crd-1", at=at + timedelta(minutes=run),
            action="view", outcome="found",
        )  # fmt: skip
        retention.purge(("lookup_audit",))
    [day] = LookupAuditDay.objects.all()
    assert (day.count, day.first_at, day.last_at) == (2, at, at + timedelta(minutes=1))


def test_the_purge_command_reports_each_kind(ages):
    code, out, _ = run_command("purge", "--only", "sweeps", "--only", "alerts")
    assert code == 0
    assert out.splitlines() == ["sweeps: 0 rows", "alerts: 0 rows"]
    with pytest.raises(CommandError, match="'everything' is not one of terminal_orders"):
        run_command("purge", "--only", "everything")


# --- At scale, on PostgreSQL --------------------------------------------------------------------

ORDERS = 20_000


def _insert_orders(now) -> None:
    """ORDERS orders made by SQL: even ones finished; every other pair silent for 400 days."""
    overrides = {
        "issuer_id": f"'{ISSUER}'",
        "card_id": "'crd-scale-' || g",
        "stage": "CASE WHEN g %% 2 = 0 THEN 'CARD_SHIPPED' ELSE 'CARD_PROD_ONGOING' END",
        "operation_status": "CASE WHEN g %% 2 = 0 THEN 'SUCCESSFUL' ELSE 'PENDING' END",
        "terminal": "g %% 2 = 0",
        "first_seen_at": "%(now)s - (CASE WHEN g %% 4 < 2 THEN 400 ELSE 1 END) * interval '1 day'",
        "last_event_at": "%(now)s - (CASE WHEN g %% 4 < 2 THEN 400 ELSE 1 END) * interval '1 day'",
    }
    columns, values = [], []
    for field in CardOrder._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(field.column)
        if field.name in overrides:
            values.append(overrides[field.name])
        elif field.null:
            values.append("NULL")
        elif isinstance(field, models.BooleanField):
            values.append("false")
        elif isinstance(field, models.IntegerField):
            values.append("0")
        elif isinstance(field, models.DateTimeField):
            values.append("%(now)s")
        else:
            values.append("''")
    table = CardOrder._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)})"
            f" SELECT {', '.join(values)} FROM generate_series(1, {ORDERS}) AS g",
            {"now": now},
        )
        # Three events per order, the last at the order's last event.
        cursor.execute(
            f"""INSERT INTO {TimelineEvent._meta.db_table}
                (order_id, content_hash, source, verdict, received_at, operation_id, status,
                 operation_status, shipment_status, raw, note)
            SELECT o.id, md5(o.id || '-' || k), 'notification', 'applied',
                   o.last_event_at - (3 - k) * interval '1 hour', 'op-' || o.id,
                   'STAGE_' || k, 'PENDING', '', jsonb_build_object('k', k), ''
            FROM {table} o, generate_series(1, 3) AS k"""
        )
        cursor.execute(
            f"""INSERT INTO {InboxItem._meta.db_table}
                (issuer_id, received_at, body, headers, outcome, error, results, applied,
                 duplicate, stale, unrecognized, conflict, quarantined, ignored)
            SELECT %(issuer)s,
                   %(now)s - (CASE WHEN g %% 2 = 0 THEN 40 ELSE 1 END) * interval '1 day',
                   convert_to('{{"operations": []}}', 'UTF8'), '{{}}', 'processed', '', '[]',
                   1, 0, 0, 0, 0, 0, 0
            FROM generate_series(1, {ORDERS}) AS g""",
            {"now": now, "issuer": ISSUER},
        )
        cursor.execute(
            f"""INSERT INTO {LookupAudit._meta.db_table}
                (username, issuer_id, card_id, at, action, outcome, detail)
            SELECT 'user-' || (g %% 3), %(issuer)s, 'crd-scale-' || (g %% 100),
                   %(now)s - (CASE WHEN g %% 2 = 0 THEN 100 ELSE 1 END) * interval '1 day'
                   + g * interval '1 second', 'view', 'found', ''
            FROM generate_series(1, {2 * ORDERS}) AS g""",
            {"now": now, "issuer": ISSUER},
        )


def _facts(order_ids: list[int]) -> list[tuple]:
    """What the card pages show of these orders' timelines."""
    return list(
        TimelineEvent.objects.filter(order_id__in=order_ids)
        .order_by("order_id", "received_at", "id")
        .values_list("order_id", "status", "operation_status", "source", "verdict", "received_at")
    )


def _page(client, card_id: str) -> str:
    html = client.get(f"/cards/{ISSUER}/{card_id}/").content.decode()
    return re.sub(r'(nonce|value)="[^"]*"|"x-csrftoken": "[^"]*"', "", html)


def test_purge_at_scale_keeps_every_fact_the_pages_show(on_postgres, ages, agent_client):
    now = timezone.now()
    _insert_orders(now)
    old_audit = LookupAudit.objects.filter(at__lt=now - 90 * DAY).count()
    kept_ids = list(
        CardOrder.objects.exclude(terminal=True, last_event_at__lt=now - 365 * DAY).values_list(
            "pk", flat=True
        )
    )
    facts = _facts(kept_ids)
    pages = {card: _page(agent_client, card) for card in ("crd-scale-1", "crd-scale-3")}

    done = {p.kind: p.rows for p in retention.purge(batch=1000, now=now)}

    assert done["terminal_orders"] == ORDERS // 4
    assert sorted(CardOrder.objects.values_list("pk", flat=True)) == sorted(kept_ids)
    assert TimelineEvent.objects.count() == 3 * len(kept_ids)
    assert _facts(kept_ids) == facts
    # Raw JSON goes for the old events of kept orders (silent for 400 days) only.
    assert done["event_raw"] == 3 * (ORDERS // 4)
    assert not TimelineEvent.objects.filter(raw__isnull=False, received_at__lt=now - 180 * DAY)
    assert TimelineEvent.objects.filter(raw__isnull=False).count() == 3 * (ORDERS // 2)
    # Bodies: emptied when older than 30 days, rows kept.
    assert InboxItem.objects.count() == ORDERS
    assert done["inbox_bodies"] == ORDERS // 2
    assert InboxItem.objects.filter(body=b"").count() == ORDERS // 2
    # Audit: every old read counted in a day row, the recent rows untouched.
    assert done["lookup_audit"] == old_audit
    assert sum(LookupAuditDay.objects.values_list("count", flat=True)) == old_audit
    assert LookupAudit.objects.filter(at__lt=now - 90 * DAY).count() == 0
    # The pages of kept orders read the same.
    for card, html in pages.items():
        assert _page(agent_client, card) == html
    # A second run finds nothing left to do.
    assert all(p.rows == 0 for p in retention.purge(batch=1000, now=now))
