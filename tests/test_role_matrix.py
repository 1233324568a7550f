"""Least privilege, proven: every address and HTMX partial asked by every kind of account, the
answers compared with the table below. A cell that changes fails the test, naming the cell.

The rows are generated from the URL configuration and the admin site's registry (a new page
without a row fails too); the expected answers are written out by hand.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.conftest import ISSUER, NOTIFY_URL, TOKEN_URL, make_order
from tracker import roles
from tracker.models import InboxItem, RecheckBatch

pytestmark = pytest.mark.django_db

HX = {"HX-Request": "true"}
CARD = "crd-matrix-1"
ROLES = ("anon", "nogroup", "staff", "agent", "super", "admin", "root")

# anon: not signed in. nogroup: signed in, in no group. staff: the is_staff flag and no group.
# agent, super(visor), admin(istrator): the three roles (CONTRACT §4). root: a superuser.
# 302 from anonymous is the login page; an HTMX request gets 200 with HX-Refresh instead.
EXPECTED = """
row                                                 anon   nogroup staff  agent  super  admin  root
login                                               200    302    302    302    302    302    302
search                                              302    403    403    200    200    200    200
search#search-results                               200    403    403    200    200    200    200
card_detail                                         302    403    403    200    200    200    200
card_detail#card-header                             200    403    403    200    200    200    200
card_detail#timeline                                200    403    403    200    200    200    200
card_detail#card-banner                             200    403    403    200    200    200    200
card_detail:other_issuer                            302    404    404    404    404    404    404
card_live                                           302    403    403    302    302    302    302
card_live#card-live                                 200    403    403    200    200    200    200
card_live:other_issuer                              302    404    404    404    404    404    404
d1_lookup                                           302    403    403    200    200    200    200
d1_lookup#d1-lookup                                 200    403    403    200    200    200    200
d1_lookup:other_issuer                              302    404    404    404    404    404    404
queue                                               302    403    403    403    200    200    200
queue#queue-table                                   200    403    403    403    200    200    200
queue_overview                                      302    403    403    403    200    200    200
queue_overview#queue-overview                       200    403    403    403    200    200    200
queue_export                                        302    403    403    403    200    200    200
queue_recheck                                       302    403    403    403    302    302    302
recheck_progress                                    302    403    403    403    200    200    200
recheck_progress#recheck-progress                   200    403    403    403    200    200    200
queue_timeline#row-detail                           200    403    403    403    200    200    200
queue_acknowledge                                   302    403    403    403    200    200    200
queue_acknowledge#acknowledge-form                  200    403    403    403    200    200    200
queue_acknowledge:post                              302    403    403    403    302    302    302
delivery                                            302    403    403    403    200    200    200
healthz                                             200    200    200    200    200    200    200
livez                                               200    200    200    200    200    200    200
metrics                                             200    200    200    200    200    200    200
d1_notifications                                    401    401    401    401    401    401    401
d1_token                                            401    401    401    401    401    401    401
set_language                                        302    302    302    302    302    302    302
oidc_authentication_init                            404    404    404    404    404    404    404
oidc_authentication_callback                        404    404    404    404    404    404    404
admin:index                                         302    302    200    302    200    200    200
admin:auth_group_changelist                         302    302    403    302    200    200    200
admin:auth_group_add                                302    302    403    302    403    403    200
admin:auth_user_changelist                          302    302    403    302    200    200    200
admin:auth_user_add                                 302    302    403    302    403    200    200
admin:auth_user_change:agent                        302    302    403    302    200    200    200
admin:auth_user_password:agent                      302    302    403    302    403    200    200
admin:auth_user_password:peer                       302    302    403    302    403    403    200
admin:auth_user_password:root                       302    302    403    302    403    403    200
admin:auth_user_delete:agent                        302    302    403    302    403    403    200
admin:axes_accessattempt_changelist                 302    302    403    302    403    403    200
admin:axes_accessfailurelog_changelist              302    302    403    302    403    403    200
admin:axes_accesslog_changelist                     302    302    403    302    403    403    200
admin:django_tasks_database_dbtaskresult_changelist 302    302    403    302    200    200    200
admin:tracker_acknowledgement_changelist            302    302    403    302    200    200    200
admin:tracker_cardorder_changelist                  302    302    403    302    200    200    200
admin:tracker_cardorder_change                      302    302    403    302    200    200    200
admin:tracker_cardorder_history                     302    302    403    302    200    200    200
admin:tracker_cardorder_import                      302    302    403    302    403    200    200
admin:tracker_cardorder_delete                      302    302    403    302    403    403    403
admin:tracker_exportaudit_changelist                302    302    403    302    200    200    200
admin:tracker_inboxitem_changelist                  302    302    403    302    200    200    200
admin:tracker_inboxitem_change                      302    302    403    302    200    200    200
admin:tracker_lookupaudit_changelist                302    302    403    302    200    200    200
admin:tracker_lookupauditday_changelist             302    302    403    302    200    200    200
admin:tracker_alert_changelist                      302    302    403    302    200    200    200
admin:tracker_alertrule_changelist                  302    302    403    302    200    200    200
admin:tracker_sweep_changelist                      302    302    403    302    200    200    200
admin:tracker_threshold_changelist                  302    302    403    302    200    200    200
admin:tracker_timelineevent_changelist              302    302    403    302    200    200    200
logout                                              302    302    302    302    302    302    302
"""


@dataclass
class World:
    """What the requests need: an order, a batch, an inbox item and the accounts."""

    order_id: int
    batch_id: int
    inbox_id: int
    users: dict[str, User] = field(default_factory=dict)


@dataclass(frozen=True)
class Ask:
    method: str
    url: Callable[[World], str]
    data: dict | None = None
    headers: dict | None = None


def _admin(name: str, *args: Callable[[World], object]) -> Callable[[World], str]:
    return lambda world: reverse(f"admin:{name}", args=[arg(world) for arg in args])


def _user(role: str) -> Callable[[World], int]:
    return lambda world: world.users[role].pk


def _card(issuer: str = ISSUER, suffix: str = "") -> Callable[[World], str]:
    return lambda world: f"/cards/{issuer}/{CARD}/{suffix}"


def _order(name: str) -> Callable[[World], str]:
    return lambda world: reverse(f"tracker:{name}", args=[world.order_id])


OTHER = "OTHERISSU1"
REQUESTS: dict[str, Ask] = {
    "login": Ask("GET", lambda w: reverse("login")),
    "search": Ask("GET", lambda w: reverse("tracker:search") + "?q=crd-nothing"),
    "search#search-results": Ask(
        "GET", lambda w: reverse("tracker:search") + "?q=crd-nothing", headers=HX
    ),
    "card_detail": Ask("GET", _card()),
    **{
        f"card_detail#{target}": Ask("GET", _card(), headers={**HX, "HX-Target": target})
        for target in ("card-header", "timeline", "card-banner")
    },
    "card_detail:other_issuer": Ask("GET", _card(OTHER)),
    "card_live": Ask("POST", _card(suffix="live/")),
    "card_live#card-live": Ask("POST", _card(suffix="live/"), headers=HX),
    "card_live:other_issuer": Ask("POST", _card(OTHER, "live/")),
    "d1_lookup": Ask(
        "POST", lambda w: reverse("tracker:d1_lookup"), {"card_id": "crd-x", "issuer_id": ISSUER}
    ),
    "d1_lookup#d1-lookup": Ask(
        "POST",
        lambda w: reverse("tracker:d1_lookup"),
        {"card_id": "crd-x", "issuer_id": ISSUER},
        HX,
    ),
    "d1_lookup:other_issuer": Ask(
        "POST", lambda w: reverse("tracker:d1_lookup"), {"card_id": "crd-x", "issuer_id": OTHER}
    ),
    "queue": Ask("GET", lambda w: reverse("tracker:queue")),
    "queue#queue-table": Ask(
        "GET", lambda w: reverse("tracker:queue"), headers={**HX, "HX-Target": "queue-table"}
    ),
    "queue_overview": Ask("GET", lambda w: reverse("tracker:queue_overview")),
    "queue_overview#queue-overview": Ask(
        "GET", lambda w: reverse("tracker:queue_overview"), headers=HX
    ),
    "queue_export": Ask("GET", lambda w: reverse("tracker:queue_export")),
    "queue_recheck": Ask(
        "POST", lambda w: reverse("tracker:queue_recheck"), {"order": "__order__"}
    ),
    "recheck_progress": Ask(
        "GET", lambda w: reverse("tracker:recheck_progress", args=[w.batch_id])
    ),
    "recheck_progress#recheck-progress": Ask(
        "GET", lambda w: reverse("tracker:recheck_progress", args=[w.batch_id]), headers=HX
    ),
    "queue_timeline#row-detail": Ask("GET", _order("queue_timeline"), headers=HX),
    "queue_acknowledge": Ask("GET", _order("queue_acknowledge")),
    "queue_acknowledge#acknowledge-form": Ask("GET", _order("queue_acknowledge"), headers=HX),
    "queue_acknowledge:post": Ask(
        "POST", _order("queue_acknowledge"), {"action": "acknowledge", "note": "seen"}
    ),
    "delivery": Ask("GET", lambda w: reverse("tracker:delivery")),
    "healthz": Ask("GET", lambda w: reverse("tracker:healthz")),
    "livez": Ask("GET", lambda w: reverse("tracker:livez")),
    # From 127.0.0.1, inside TRACKER_METRICS_NETWORKS; test_metrics covers the token and the rest.
    "metrics": Ask("GET", lambda w: reverse("tracker:metrics")),
    "d1_notifications": Ask("POST", lambda w: NOTIFY_URL, {"operations": []}),
    "d1_token": Ask("POST", lambda w: TOKEN_URL, {"grant_type": "client_credentials"}),
    "set_language": Ask("POST", lambda w: reverse("set_language"), {"language": "en"}),
    "oidc_authentication_init": Ask("GET", lambda w: reverse("oidc_authentication_init")),
    "oidc_authentication_callback": Ask(
        "GET", lambda w: reverse("oidc_authentication_callback") + "?code=x&state=y"
    ),
    "admin:index": Ask("GET", _admin("index")),
    "admin:auth_group_add": Ask("GET", _admin("auth_group_add")),
    "admin:auth_user_add": Ask("GET", _admin("auth_user_add")),
    "admin:auth_user_change:agent": Ask("GET", _admin("auth_user_change", _user("agent"))),
    "admin:auth_user_password:agent": Ask(
        "GET", _admin("auth_user_password_change", _user("agent"))
    ),
    "admin:auth_user_password:peer": Ask("GET", _admin("auth_user_password_change", _user("peer"))),
    "admin:auth_user_password:root": Ask("GET", _admin("auth_user_password_change", _user("root"))),
    "admin:auth_user_delete:agent": Ask("GET", _admin("auth_user_delete", _user("agent"))),
    "admin:tracker_cardorder_change": Ask(
        "GET", _admin("tracker_cardorder_change", lambda w: w.order_id)
    ),
    "admin:tracker_cardorder_history": Ask(
        "GET", _admin("tracker_cardorder_history", lambda w: w.order_id)
    ),
    "admin:tracker_cardorder_import": Ask("GET", _admin("tracker_cardorder_import")),
    "admin:tracker_cardorder_delete": Ask(
        "GET", _admin("tracker_cardorder_delete", lambda w: w.order_id)
    ),
    "admin:tracker_inboxitem_change": Ask(
        "GET", _admin("tracker_inboxitem_change", lambda w: w.inbox_id)
    ),
    # Every model of the admin site: its list page (generated from the registry).
    **{
        f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist": Ask(
            "GET", _admin(f"{model._meta.app_label}_{model._meta.model_name}_changelist")
        )
        for model in admin.site._registry
    },
    "logout": Ask("POST", lambda w: reverse("logout")),
}


def _expected() -> dict[tuple[str, str], int]:
    lines = [line.split() for line in EXPECTED.strip().splitlines()]
    header, rows = lines[0], lines[1:]
    assert tuple(header[1:]) == ROLES
    return {
        (row[0], role): int(code) for row in rows for role, code in zip(ROLES, row[1:], strict=True)
    }


def _accounts() -> dict[str, User | None]:
    def member(name: str, group: str, **flags) -> User:
        user = User.objects.create_user(name, **flags)
        user.groups.add(Group.objects.get(name=group))
        return user

    return {
        "anon": None,
        "nogroup": User.objects.create_user("nobody"),
        "staff": User.objects.create_user("staffer", is_staff=True),
        "agent": member("agent", roles.AGENTS),
        "super": member("supervisor", roles.SUPERVISORS, is_staff=True),
        "admin": member("administrator", roles.ADMINISTRATORS, is_staff=True),
        "root": User.objects.create_superuser("root", password="root-pw-1"),
    }


def _named_patterns(resolver: URLResolver, prefix: str = "") -> set[str]:
    names = set()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            if pattern.namespace == "admin":
                continue  # the admin site's rows come from its registry
            names |= _named_patterns(pattern, f"{pattern.namespace}:" if pattern.namespace else "")
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(prefix + pattern.name)
    return names


def test_every_page_of_the_site_has_a_row_in_the_matrix():
    rows = {name.partition("#")[0].partition(":")[0] for name in REQUESTS}
    rows |= {f"tracker:{name}" for name in rows}
    missing = {
        name
        for name in _named_patterns(get_resolver())
        if name not in rows and name != "javascript-catalog"
    }
    assert not missing, f"pages without a row in the role matrix: {sorted(missing)}"
    assert set(REQUESTS) == {row for row, _role in _expected()}, "EXPECTED and REQUESTS differ"


def test_each_role_gets_exactly_the_expected_answer_from_every_page(d1, settings):
    settings.TRACKER_LIVE_PER_MINUTE = 1000
    accounts = _accounts()
    order = make_order(card_id=CARD, stage="CARD_PROD_ONGOING")
    world = World(
        order_id=order.pk,
        batch_id=RecheckBatch.objects.create(total=1).pk,
        inbox_id=InboxItem.objects.create(issuer_id=ISSUER, body=b"{}").pk,
        users={
            "agent": accounts["agent"],
            "root": accounts["root"],
            "peer": User.objects.create_user("peer-admin", is_staff=True),
        },
    )
    world.users["peer"].groups.add(Group.objects.get(name=roles.ADMINISTRATORS))
    expected = _expected()
    actual: dict[tuple[str, str], int] = {}
    for role in ROLES:
        client = Client()
        if accounts[role] is not None:
            client.force_login(accounts[role])
        for row, ask in REQUESTS.items():
            data = dict(ask.data or {})
            if data.get("order") == "__order__":
                data["order"] = str(world.order_id)
            send = client.get if ask.method == "GET" else client.post
            response = send(ask.url(world), data or None, headers=ask.headers or {})
            actual[(row, role)] = response.status_code
    changed = [
        f"{row} as {role}: expected {expected[row, role]}, got {actual[row, role]}"
        for row, role in expected
        if actual[row, role] != expected[row, role]
    ]
    assert not changed, "\n".join(changed)
