from django.urls import path

from tracker import views

app_name = "tracker"

urlpatterns = [
    path("", views.search, name="search"),
    path("cards/<str:issuer_id>/<str:card_id>/", views.card_detail, name="card_detail"),
]
