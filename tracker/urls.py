from django.urls import path

from tracker import notifications, views

app_name = "tracker"

urlpatterns = [
    path("", views.search, name="search"),
    path("cards/<str:issuer_id>/<str:card_id>/", views.card_detail, name="card_detail"),
    path("delivery/", views.delivery, name="delivery"),
    path("healthz", views.healthz, name="healthz"),
    # D1-facing (REFERENCE §4): paths fixed by D1, their own authentication, no login.
    path(
        "notifications/d1/v2/issuers/<str:issuer_id>/cards",
        notifications.d1_notifications,
        name="d1_notifications",
    ),
    path("authz/d1/v1/oauth2/token", notifications.d1_token, name="d1_token"),
]
