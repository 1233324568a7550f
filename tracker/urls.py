from django.urls import path

from tracker import queue_views, views

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
]
