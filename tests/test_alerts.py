"""Alert rules: each fires once while its condition holds, and resolves, by e-mail (a local SMTP
server) and webhook (a local HTTP receiver)."""

import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from django.core.cache import cache
from django.utils import timezone

from tests.conftest import ISSUER, make_order, run_command
from tracker import tasks
from tracker.d1 import breaker
from tracker.models import (
    Alert,
    AlertEvent,
    AlertRule,
    AuthFailureCount,
    CardOrder,
    InboxItem,
    Sweep,
)
from tracker.ops import alerts

pytestmark = pytest.mark.django_db

Kind = AlertRule.Kind


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(
            (envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default))
        )
        return "250 OK"


@pytest.fixture
def mailbox(settings) -> Iterator[_Mailbox]:
    """A real SMTP server on localhost that keeps what it receives."""
    box = _Mailbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    settings.MAILERS = {
        "default": {
            "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": port, "timeout": 5},
        }
    }
    settings.TRACKER_ALERT_EMAILS = ["ops@example.test", "oncall@example.test"]
    yield box
    controller.stop()


class _Hook:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.status = 200


@pytest.fixture
def webhook(settings) -> Iterator[_Hook]:
    """A chat webhook receiver over real HTTP on localhost."""
    hook = _Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.posts.append(json.loads(body))
            self.send_response(hook.status)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.TRACKER_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hooks/abc"
    yield hook
    server.shutdown()
    server.server_close()


def _only(kind: str, threshold: int) -> None:
    """Every rule off but this one, at this threshold."""
    alerts.rules()
    AlertRule.objects.exclude(kind=kind).update(enabled=False)
    AlertRule.objects.filter(kind=kind).update(threshold=threshold)


# Each condition: (kind, threshold, make it hold, make it stop).
def _sweep_drift_on() -> None:
    Sweep.objects.create(finished_at=timezone.now(), checked=40, repaired=3)


def _sweep_drift_off() -> None:
    later = timezone.now() + timedelta(seconds=1)
    Sweep.objects.create(started_at=later, finished_at=later, checked=40, repaired=0)


def _queue_on() -> None:
    past = timezone.now() - timedelta(hours=1)
    for n in range(2):
        make_order(card_id=f"crd-queue-{n}", attention_since=past, silent_after=past)


def _queue_off() -> None:
    CardOrder.objects.update(muted_until=timezone.now() + timedelta(days=1))


def _late_on() -> None:
    make_order(card_id="crd-late", late_after=timezone.now() - timedelta(hours=2))


def _late_off() -> None:
    CardOrder.objects.update(terminal=True)


def _silent_on() -> None:
    item = InboxItem.objects.create(issuer_id=ISSUER, body=b"{}", outcome="processed")
    InboxItem.objects.filter(pk=item.pk).update(received_at=timezone.now() - timedelta(days=10))


def _silent_off() -> None:
    InboxItem.objects.create(issuer_id=ISSUER, body=b"{}", outcome="processed")


def _breaker_on() -> None:
    cache.clear()
    for _ in range(10):
        breaker.record_failure(None)


def _breaker_off() -> None:
    breaker.record_success("probe")


def _lag_on() -> None:
    item = InboxItem.objects.create(issuer_id=ISSUER, body=b"{}")
    InboxItem.objects.filter(pk=item.pk).update(received_at=timezone.now() - timedelta(minutes=10))


def _lag_off() -> None:
    InboxItem.objects.update(outcome=InboxItem.Outcome.PROCESSED, processed_at=timezone.now())


def _backlog_on() -> None:
    for n in range(3):
        tasks.recompute_attention.enqueue(f"threshold-{n}")


def _backlog_off() -> None:
    from django_tasks_db.models import DBTaskResult

    DBTaskResult.objects.all().delete()


def _auth_on() -> None:
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    AuthFailureCount.objects.create(issuer_id=ISSUER, hour=hour, count=12)


def _auth_off() -> None:
    AuthFailureCount.objects.all().delete()


CONDITIONS: list[tuple[str, int, Callable[[], None], Callable[[], None]]] = [
    (Kind.SWEEP_DRIFT, 2, _sweep_drift_on, _sweep_drift_off),
    (Kind.QUEUE_SIZE, 1, _queue_on, _queue_off),
    (Kind.LATE_COUNT, 0, _late_on, _late_off),
    (Kind.ISSUER_SILENT, 1, _silent_on, _silent_off),
    (Kind.BREAKER_OPEN, 0, _breaker_on, _breaker_off),
    (Kind.APPLY_LAG, 60, _lag_on, _lag_off),
    (Kind.TASK_BACKLOG, 2, _backlog_on, _backlog_off),
    (Kind.AUTH_FAILURES, 5, _auth_on, _auth_off),
]


def test_every_rule_has_a_condition_tested():
    assert {kind for kind, *_ in CONDITIONS} == set(Kind)


@pytest.mark.parametrize(
    ("kind", "threshold", "start", "stop"), CONDITIONS, ids=[c[0] for c in CONDITIONS]
)
def test_an_alert_fires_once_while_its_condition_holds_then_resolves(
    mailbox, webhook, kind, threshold, start, stop
):
    _only(kind, threshold)
    assert alerts.evaluate().fired == []

    start()
    result = alerts.evaluate()
    [alert] = result.fired
    assert (alert.rule, alert.open) == (kind, True)
    [(recipients, mail)] = mailbox.messages
    assert recipients == ["ops@example.test", "oncall@example.test"]
    assert mail["Subject"].strip().startswith("[Tracker] ALERT: ")
    [post] = webhook.posts
    assert post["text"].startswith("[Tracker] ALERT: ")

    # The condition still holds: no new alert, no new message.
    for _ in range(3):
        assert alerts.evaluate().fired == []
    assert (len(mailbox.messages), len(webhook.posts)) == (1, 1)
    assert Alert.objects.count() == 1

    stop()
    result = alerts.evaluate()
    assert [a.pk for a in result.resolved] == [alert.pk]
    assert mailbox.messages[1][1]["Subject"].strip().startswith("[Tracker] RESOLVED: ")
    assert webhook.posts[1]["text"].startswith("[Tracker] RESOLVED: ")
    alert.refresh_from_db()
    assert alert.resolved_at is not None
    assert list(alert.events.values_list("kind", "channel")) == [
        ("fired", ""),
        ("sent", "email"),
        ("sent", "webhook"),
        ("resolved", ""),
        ("sent", "email"),
        ("sent", "webhook"),
    ]
    assert alerts.evaluate().resolved == []
    assert (len(mailbox.messages), len(webhook.posts)) == (2, 2)


def test_a_condition_that_comes_back_opens_a_new_alert(mailbox, webhook):
    _only(Kind.LATE_COUNT, 0)
    _late_on()
    first = alerts.evaluate().fired[0]
    _late_off()
    alerts.evaluate()
    CardOrder.objects.update(terminal=False)
    second = alerts.evaluate().fired[0]
    assert second.pk != first.pk
    assert len(webhook.posts) == 3


def test_silence_is_counted_per_issuer(mailbox, webhook, settings):
    settings.D1_ISSUER_IDS = [ISSUER, "ISS0000002"]
    _only(Kind.ISSUER_SILENT, 1)
    _silent_on()
    [alert] = alerts.evaluate().fired
    assert alert.subject == ISSUER
    assert ISSUER in mailbox.messages[0][1]["Subject"]


def test_a_failing_channel_is_recorded_and_the_alert_still_opens(mailbox, webhook):
    webhook.status = 500
    _only(Kind.LATE_COUNT, 0)
    _late_on()
    [alert] = alerts.evaluate().fired
    assert list(alert.events.values_list("kind", "channel", "detail")) == [
        ("fired", "", alert.summary),
        ("sent", "email", "ops@example.test, oncall@example.test"),
        ("not_sent", "webhook", "HTTP 500"),
    ]


def test_a_disabled_rule_resolves_its_open_alert(mailbox, webhook):
    _only(Kind.LATE_COUNT, 0)
    _late_on()
    alerts.evaluate()
    AlertRule.objects.filter(kind=Kind.LATE_COUNT).update(enabled=False)
    [resolved] = alerts.evaluate().resolved
    assert resolved.rule == Kind.LATE_COUNT


def test_thresholds_come_from_settings_until_edited(settings):
    settings.TRACKER_ALERT_THRESHOLDS = {"queue_size": 7}
    assert {rule.kind: rule.threshold for rule in alerts.rules()}[Kind.QUEUE_SIZE] == 7
    AlertRule.objects.filter(kind=Kind.QUEUE_SIZE).update(threshold=9)
    settings.TRACKER_ALERT_THRESHOLDS = {"queue_size": 3}
    assert {rule.kind: rule.threshold for rule in alerts.rules()}[Kind.QUEUE_SIZE] == 9


def test_the_alerts_command_prints_what_fired_and_resolved(mailbox, webhook):
    _only(Kind.LATE_COUNT, 0)
    _late_on()
    code, out, _ = run_command("alerts", "--once")
    assert code == 0 and out.startswith("FIRED late_count: 1 orders are late.")
    _late_off()
    code, out, _ = run_command("alerts")
    assert out.strip() == "RESOLVED late_count"
    assert AlertEvent.objects.filter(kind="resolved").count() == 1


# --- The admin site ---------------------------------------------------------------------------


def test_supervisors_read_alerts_and_their_history_but_change_nothing(client, mailbox, webhook):
    from tests.conftest import staff
    from tracker import roles

    _only(Kind.LATE_COUNT, 0)
    _late_on()
    [alert] = alerts.evaluate().fired
    client.force_login(staff(roles.SUPERVISORS))
    page = client.get(f"/admin/tracker/alert/{alert.pk}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert alert.summary in html and "ops@example.test, oncall@example.test" in html
    assert 'name="_save"' not in html
    rules = client.get("/admin/tracker/alertrule/")
    assert rules.status_code == 200 and 'name="form-0-threshold"' not in rules.content.decode()
    rule = AlertRule.objects.get(kind=Kind.LATE_COUNT)
    change = client.post(
        f"/admin/tracker/alertrule/{rule.pk}/change/", {"threshold": 5, "enabled": "on"}
    )
    assert change.status_code == 403
    assert AlertRule.objects.get(kind=Kind.LATE_COUNT).threshold == 0


def test_administrators_edit_thresholds_and_nobody_deletes_alerts(client):
    from tests.conftest import staff
    from tracker import roles

    client.force_login(staff(roles.ADMINISTRATORS))
    page = client.get("/admin/tracker/alertrule/")
    assert page.status_code == 200
    assert AlertRule.objects.count() == len(Kind)  # listed from the start
    rule = AlertRule.objects.get(kind=Kind.QUEUE_SIZE)
    response = client.post(
        f"/admin/tracker/alertrule/{rule.pk}/change/", {"threshold": 42, "enabled": "on"}
    )
    assert response.status_code == 302
    assert AlertRule.objects.get(kind=Kind.QUEUE_SIZE).threshold == 42
    alert = Alert.objects.create(
        rule=Kind.QUEUE_SIZE, threshold=1, value=2, last_value=2, summary="s"
    )
    assert client.post(f"/admin/tracker/alert/{alert.pk}/delete/").status_code == 403
