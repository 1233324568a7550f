from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from tracker.models import CardOrder


@require_GET
@permission_required("tracker.view_cardorder", raise_exception=True)
def search(request: HttpRequest) -> HttpResponse:
    q = request.GET.get("q", "").strip()
    orders = CardOrder.objects.order_by("-last_event_at")
    if q:
        orders = orders.filter(card_id__startswith=q)
    return render(request, "tracker/search.html", {"q": q, "orders": orders[:50]})


@require_GET
@permission_required("tracker.view_cardorder", raise_exception=True)
def card_detail(request: HttpRequest, issuer_id: str, card_id: str) -> HttpResponse:
    order = get_object_or_404(CardOrder, issuer_id=issuer_id, card_id=card_id)
    events = order.events.order_by("-received_at", "-id")
    return render(request, "tracker/card_detail.html", {"order": order, "events": events})
