"""When an order becomes late, and where it stands against its due date (REFERENCE §7).

D1's dueDate is the estimated *shipment* date, computed in the production site's calendar. A
date-only dueDate ends at midnight in the site's time zone; a datetime is used as it is.
"""

import zoneinfo
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.conf import settings

from tracker.models import CardOrder


def site_timezone(production_site: str) -> zoneinfo.ZoneInfo:
    zone = settings.D1_PRODUCTION_SITE_TZ.get(production_site, settings.D1_DEFAULT_SITE_TZ)
    return zoneinfo.ZoneInfo(zone)


def late_after(
    due_date: date | None, due_at: datetime | None, production_site: str
) -> datetime | None:
    """The instant after which an unshipped order is late, grace period included."""
    if due_at is not None:
        deadline = due_at
    elif due_date is not None:
        next_day = datetime.combine(due_date + timedelta(days=1), time.min)
        deadline = next_day.replace(tzinfo=site_timezone(production_site))
    else:
        return None
    return deadline + timedelta(hours=settings.D1_LATE_GRACE_HOURS)


def add_working_time(start: datetime, duration: timedelta, zone: zoneinfo.ZoneInfo) -> datetime:
    """`start` plus `duration` counted on the site's working days only (D1_WORKING_DAYS).

    REFERENCE §7: production runs on the personalization center's local calendar, Mon-Fri by
    default, so a weekend of silence at a production stage is not a delay.
    """
    working_days = settings.D1_WORKING_DAYS
    remaining = duration
    moment = start
    for _ in range(366):
        local = moment.astimezone(zone)
        next_midnight = datetime.combine(local.date() + timedelta(days=1), time.min, tzinfo=zone)
        if local.weekday() in working_days:
            available = next_midnight - moment
            if remaining <= available:
                return moment + remaining
            remaining -= available
        moment = next_midnight
    raise ValueError(f"D1_WORKING_DAYS leaves no working time within a year of {start}")


NO_DUE_DATE = "no_due_date"
CLOSED = "closed"
ON_TIME = "on_time"
DUE_TODAY = "due_today"
GRACE = "grace"
LATE = "late"


@dataclass(frozen=True)
class SlaStatus:
    """Where an order stands against its due date, in the production site's calendar."""

    state: str
    due_day: date | None
    days_late: int
    site_zone: zoneinfo.ZoneInfo


def status(order: CardOrder, now: datetime) -> SlaStatus:
    """The SLA state of an order at `now` (REFERENCE §7): the site's calendar decides the day."""
    zone = site_timezone(order.production_site)
    due_day = order.due_at.astimezone(zone).date() if order.due_at else order.due_date
    if due_day is None:
        return SlaStatus(NO_DUE_DATE, None, 0, zone)
    if order.terminal:
        return SlaStatus(CLOSED, due_day, 0, zone)
    today = now.astimezone(zone).date()
    deadline = order.late_after or late_after(order.due_date, order.due_at, order.production_site)
    if deadline is not None and now > deadline:
        return SlaStatus(LATE, due_day, max((today - due_day).days, 0), zone)
    if today == due_day:
        return SlaStatus(DUE_TODAY, due_day, 0, zone)
    # Past the due day but inside D1_LATE_GRACE_HOURS: not late yet.
    return SlaStatus(GRACE if today > due_day else ON_TIME, due_day, 0, zone)
