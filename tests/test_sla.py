"""The SLA state of an order at a controlled moment (REFERENCE §7)."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.test import override_settings

from tracker import sla
from tracker.models import CardOrder

PARIS = {"PC-FR": "Europe/Paris"}


def order(due_date=None, due_at=None, site="PC-FR", terminal=False) -> CardOrder:
    return CardOrder(
        production_site=site,
        due_date=due_date,
        due_at=due_at,
        terminal=terminal,
        late_after=sla.late_after(due_date, due_at, site),
    )


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@override_settings(D1_PRODUCTION_SITE_TZ=PARIS)
@pytest.mark.parametrize(
    ("now", "state", "days_late"),
    [
        (utc(2025, 3, 4, 22, 59), sla.ON_TIME, 0),  # 23:59 in Paris on the 4th
        (utc(2025, 3, 4, 23, 0), sla.DUE_TODAY, 0),  # midnight in Paris: the 5th has begun
        (utc(2025, 3, 5, 22, 59), sla.DUE_TODAY, 0),
        (utc(2025, 3, 5, 23, 0, 1), sla.LATE, 1),  # just after midnight on the 6th in Paris
        (utc(2025, 3, 8, 12, 0), sla.LATE, 3),
    ],
)
def test_a_date_only_due_date_is_a_day_in_the_sites_calendar(now, state, days_late):
    status = sla.status(order(due_date=date(2025, 3, 5)), now)
    assert (status.state, status.days_late, status.due_day) == (state, days_late, date(2025, 3, 5))
    assert str(status.site_zone) == "Europe/Paris"


@override_settings(D1_PRODUCTION_SITE_TZ=PARIS)
def test_a_due_datetime_is_late_the_moment_it_passes():
    due_at = utc(2025, 3, 5, 16, 0)  # 17:00 in Paris
    assert sla.status(order(due_at=due_at), utc(2025, 3, 5, 15, 59)).state == sla.DUE_TODAY
    late = sla.status(order(due_at=due_at), utc(2025, 3, 5, 16, 1))
    assert (late.state, late.days_late) == (sla.LATE, 0)  # "due earlier today"
    assert sla.status(order(due_at=due_at), utc(2025, 3, 7, 9, 0)).days_late == 2


@override_settings(D1_PRODUCTION_SITE_TZ=PARIS, D1_LATE_GRACE_HOURS=12.0)
def test_the_grace_period_delays_late_and_says_so():
    due = order(due_date=date(2025, 3, 5))
    assert sla.status(due, utc(2025, 3, 6, 10, 0)).state == sla.GRACE  # 11:00 Paris, < 12 h
    assert sla.status(due, utc(2025, 3, 6, 11, 1)).state == sla.LATE


def test_a_finished_order_is_closed_whatever_its_due_date():
    finished = order(due_date=date(2025, 3, 1), terminal=True)
    assert sla.status(finished, utc(2025, 4, 1)).state == sla.CLOSED


def test_no_due_date_means_no_sla():
    assert sla.status(order(), utc(2025, 4, 1)).state == sla.NO_DUE_DATE


def test_a_site_without_a_configured_zone_uses_the_default():
    status = sla.status(
        order(due_date=date(2025, 3, 5), site="PC-UNKNOWN"), utc(2025, 3, 5, 23, 30)
    )
    assert (status.state, str(status.site_zone)) == (sla.DUE_TODAY, "UTC")


@override_settings(D1_PRODUCTION_SITE_TZ=PARIS)
def test_an_order_saved_without_late_after_is_still_measured():
    unsaved = order(due_date=date(2025, 3, 5))
    unsaved.late_after = None
    assert sla.status(unsaved, utc(2025, 3, 9)).state == sla.LATE
    assert sla.status(unsaved, utc(2025, 3, 9)).days_late == 4


def test_late_matches_the_order_model():
    due = order(due_date=date(2025, 3, 5), site="PC-X")
    for hours in range(0, 72, 6):
        now = utc(2025, 3, 4) + timedelta(hours=hours)
        assert (sla.status(due, now).state == sla.LATE) == due.is_late(now)
