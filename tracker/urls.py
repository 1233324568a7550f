from django.urls import path

from tracker import notifications, queue_views, views

app_name = "tracker"

urlpatterns = [
    path("", views.search, name="search"),
    path("cards/<str:issuer_id>/<str:card_id>/", views.card_detail, name="card_detail"),
    path("stuck/", queue_views.stuck, name="stuck"),
    path("stuck/overview/", queue_views.stuck_glance, name="stuck_glance"),
    path("stuck/export.csv", queue_views.stuck_export, name="stuck_export"),
    path("stuck/recheck/", queue_views.stuck_recheck, name="stuck_recheck"),
    path("stuck/recheck/<int:batch_id>/", queue_views.recheck_progress, name="recheck_progress"),
    path("stuck/<int:order_id>/timeline/", queue_views.stuck_timeline, name="stuck_timeline"),
    path(
        "stuck/<int:order_id>/acknowledge/",
        queue_views.stuck_acknowledge,
        name="stuck_acknowledge",
    ),
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
