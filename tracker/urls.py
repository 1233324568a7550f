from django.urls import path, register_converter

from tracker import notifications, pan
from tracker.d1.schema import CARD_ID, ISSUER_ID
from tracker.ops import views as ops_views
from tracker.views import health, pages, queue

app_name = "tracker"


class IssuerIdConverter:
    """D1's issuerId: exactly 10 letters or digits (REFERENCE §4)."""

    regex = ISSUER_ID.pattern

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


class CardIdConverter(IssuerIdConverter):
    """D1's cardId: 1 to 48 of [A-Za-z0-9_-] (REFERENCE §1). A card number is never one: its
    address is not found, before any view could audit it or ask D1 about it."""

    regex = CARD_ID.pattern

    def to_python(self, value: str) -> str:
        if pan.contains_pan(value):
            raise ValueError("a card number is not a card ID")
        return value


register_converter(IssuerIdConverter, "issuer_id")
register_converter(CardIdConverter, "card_id")

urlpatterns = [
    path("", pages.search, name="search"),
    path("cards/<issuer_id:issuer_id>/<card_id:card_id>/", pages.card_detail, name="card_detail"),
    path("cards/<issuer_id:issuer_id>/<card_id:card_id>/live/", pages.card_live, name="card_live"),
    path("lookup/", pages.d1_lookup, name="d1_lookup"),
    # The supervisors' queue: named queue in the code, at the path /stuck/ (CONTRACT §3).
    path("stuck/", queue.queue, name="queue"),
    path("stuck/overview/", queue.queue_overview, name="queue_overview"),
    path("stuck/export.csv", queue.queue_export, name="queue_export"),
    path("stuck/recheck/", queue.queue_recheck, name="queue_recheck"),
    path("stuck/recheck/<int:batch_id>/", queue.recheck_progress, name="recheck_progress"),
    path("stuck/<int:order_id>/timeline/", queue.queue_timeline, name="queue_timeline"),
    path("stuck/<int:order_id>/acknowledge/", queue.queue_acknowledge, name="queue_acknowledge"),
    path("delivery/", health.delivery, name="delivery"),
    path("healthz", health.healthz, name="healthz"),
    path("livez", ops_views.livez, name="livez"),
    path("metrics", ops_views.metrics_view, name="metrics"),
    # D1-facing (REFERENCE §4): paths fixed by D1, their own authentication, no login.
    path(
        "notifications/d1/v2/issuers/<str:issuer_id>/cards",
        notifications.d1_notifications,
        name="d1_notifications",
    ),
    path("authz/d1/v1/oauth2/token", notifications.d1_token, name="d1_token"),
]
