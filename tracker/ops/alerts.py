"""Alert rules: evaluate each condition, open an alert when it starts to hold, close it when it
stops, and tell people both times (tracker/ops/channels.py).

De-duplication is the open Alert row itself: at most one per (rule, subject) while the condition
holds (a partial unique constraint), so evaluating every minute sends one message when a
condition starts and one when it ends, however long it lasts. `manage.py alerts --every 1m`
runs the evaluation.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from tracker import sla
from tracker.models import Alert, AlertEvent, AlertRule
from tracker.ops import channels, signals

logger = logging.getLogger(__name__)

Kind = AlertRule.Kind

DEFAULT_THRESHOLDS = {
    Kind.SWEEP_DRIFT: 10,  # cards one sweep had to repair (missed notifications)
    Kind.QUEUE_SIZE: 500,  # orders
    Kind.LATE_COUNT: 50,  # orders
    Kind.ISSUER_SILENT: 4,  # working hours
    Kind.BREAKER_OPEN: 5,  # minutes
    Kind.APPLY_LAG: 300,  # seconds
    Kind.TASK_BACKLOG: 1000,  # tasks
    Kind.AUTH_FAILURES: 20,  # in the current and the previous hour
}


@dataclass(frozen=True)
class Observation:
    """A condition's current value for one subject ("" when the rule is not per issuer)."""

    value: float
    holds: bool
    summary: str
    subject: str = ""


def rules() -> list[AlertRule]:
    """Every rule, the missing ones created from TRACKER_ALERT_THRESHOLDS or the defaults."""
    existing = {rule.kind: rule for rule in AlertRule.objects.all()}
    for kind in Kind:
        if kind not in existing:
            threshold = settings.TRACKER_ALERT_THRESHOLDS.get(kind, DEFAULT_THRESHOLDS[kind])
            existing[kind], _ = AlertRule.objects.get_or_create(
                kind=kind, defaults={"threshold": threshold}
            )
    return [existing[kind] for kind in Kind]


def observe(rule: AlertRule, now: datetime) -> list[Observation]:
    """What the rule's condition says now, per subject."""
    return _OBSERVERS[rule.kind](rule.threshold, now)


@dataclass
class Result:
    fired: list[Alert]
    resolved: list[Alert]


def evaluate(now: datetime | None = None) -> Result:
    """Evaluate every rule once: open, keep or close alerts and send the messages."""
    now = now or timezone.now()
    result = Result([], [])
    for rule in rules():
        observations = observe(rule, now) if rule.enabled else []
        holding = {o.subject: o for o in observations if o.holds}
        open_alerts = {a.subject: a for a in Alert.objects.filter(rule=rule.kind, resolved_at=None)}
        for subject, observation in holding.items():
            alert = open_alerts.get(subject)
            if alert is None:
                fired = _fire(rule, observation, now)
                if fired is not None:
                    result.fired.append(fired)
            else:
                Alert.objects.filter(pk=alert.pk).update(
                    last_seen_at=now, last_value=observation.value
                )
        for subject, alert in open_alerts.items():
            if subject not in holding and _resolve(alert, now):
                result.resolved.append(alert)
    for alert in result.fired:
        _send(alert, resolved=False)
    for alert in result.resolved:
        _send(alert, resolved=True)
    return result


def _fire(rule: AlertRule, observation: Observation, now: datetime) -> Alert | None:
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                rule=rule.kind,
                subject=observation.subject,
                started_at=now,
                last_seen_at=now,
                threshold=rule.threshold,
                value=observation.value,
                last_value=observation.value,
                summary=observation.summary,
            )
            AlertEvent.objects.create(
                alert=alert, at=now, kind=AlertEvent.Kind.FIRED, detail=observation.summary
            )
    except IntegrityError:
        return None  # another evaluator opened it a moment ago and sends the message
    about = f" {observation.subject}" if observation.subject else ""
    logger.warning("alert %s%s fired: %s", rule.kind, about, observation.summary)
    return alert


def _resolve(alert: Alert, now: datetime) -> bool:
    with transaction.atomic():
        # Only one evaluator closes it, so only one "resolved" message is sent.
        closed = Alert.objects.filter(pk=alert.pk, resolved_at=None).update(resolved_at=now)
        if closed:
            AlertEvent.objects.create(alert=alert, at=now, kind=AlertEvent.Kind.RESOLVED)
    alert.resolved_at = now
    if closed:
        logger.info("alert %s%s resolved", alert.rule, f" {alert.subject}" if alert.subject else "")
    return bool(closed)


def _send(alert: Alert, *, resolved: bool) -> None:
    for channel, ok, detail in channels.deliver(alert, resolved=resolved):
        AlertEvent.objects.create(
            alert=alert,
            kind=AlertEvent.Kind.SENT if ok else AlertEvent.Kind.NOT_SENT,
            channel=channel,
            detail=detail,
        )


# --- The conditions -----------------------------------------------------------------------


def _sweep_drift(threshold: int, now: datetime) -> list[Observation]:
    last = signals.last_sweep()
    repaired = last.repaired if last else 0
    return [
        Observation(
            repaired,
            repaired > threshold,
            _("The last reconciliation sweep repaired %(n)d cards (missed notifications).")
            % {"n": repaired},
        )
    ]


def _queue_size(threshold: int, now: datetime) -> list[Observation]:
    total = signals.queue_sizes(now)["total"]
    return [Observation(total, total > threshold, _("%(n)d orders need attention.") % {"n": total})]


def _late_count(threshold: int, now: datetime) -> list[Observation]:
    late = signals.late_count(now)
    return [Observation(late, late > threshold, _("%(n)d orders are late.") % {"n": late})]


def _issuer_silent(threshold: int, now: datetime) -> list[Observation]:
    zone = sla.site_timezone("")
    found = []
    for issuer_id, last in signals.last_notifications().items():
        if last is None:
            continue  # never heard of yet: nothing to compare with
        # Silence counts in working time only (D1_WORKING_DAYS): a weekend is not an outage.
        silent = sla.add_working_time(last, timedelta(hours=threshold), zone) < now
        hours = (now - last).total_seconds() / 3600
        found.append(
            Observation(
                round(hours, 1),
                silent,
                _("No notification from issuer %(issuer)s since %(last)s.")
                % {"issuer": issuer_id, "last": last.isoformat(timespec="minutes")},
                subject=issuer_id,
            )
        )
    return found


def _breaker_open(threshold: int, now: datetime) -> list[Observation]:
    state = signals.breaker_state(now)
    minutes = state.open_seconds / 60
    holds = state.state != "closed" and minutes >= threshold
    return [
        Observation(
            round(minutes, 1),
            holds,
            _("The D1 circuit breaker has been open for %(minutes)d minutes.")
            % {"minutes": minutes},
        )
    ]


def _apply_lag(threshold: int, now: datetime) -> list[Observation]:
    lag = signals.apply_lag_seconds(now)
    return [
        Observation(
            round(lag),
            lag > threshold,
            _("The oldest unprocessed notification is %(seconds)d seconds old.") % {"seconds": lag},
        )
    ]


def _task_backlog(threshold: int, now: datetime) -> list[Observation]:
    backlog = signals.task_backlog()
    return [
        Observation(
            backlog,
            backlog > threshold,
            _("%(n)d tasks are waiting for a worker.") % {"n": backlog},
        )
    ]


def _auth_failures(threshold: int, now: datetime) -> list[Observation]:
    failures = signals.auth_failures_last_hour(now)
    return [
        Observation(
            failures,
            failures > threshold,
            _("%(n)d refused authentications at the D1-facing endpoints within the hour.")
            % {"n": failures},
        )
    ]


_OBSERVERS: dict[str, Callable[[int, datetime], list[Observation]]] = {
    Kind.SWEEP_DRIFT: _sweep_drift,
    Kind.QUEUE_SIZE: _queue_size,
    Kind.LATE_COUNT: _late_count,
    Kind.ISSUER_SILENT: _issuer_silent,
    Kind.BREAKER_OPEN: _breaker_open,
    Kind.APPLY_LAG: _apply_lag,
    Kind.TASK_BACKLOG: _task_backlog,
    Kind.AUTH_FAILURES: _auth_failures,
}
