"""Background work (django.tasks with the django-tasks-db backend; `manage.py db_worker` runs it).

Tasks take ids and ISO strings, never model instances, call D1 and the ingest, and nothing else.
"""

from typing import Any

from django.db.models import F
from django.tasks import task

from tracker import attention
from tracker.models import RecheckBatch, Source
from tracker.reconcile import repair


@task()
def refresh_card(
    issuer_id: str, card_id: str, source: str = Source.RECONCILE, batch_id: int | None = None
) -> dict[str, Any]:
    """Fetch one card from D1 (background profile: within D1_MAX_RPS) and apply what it says."""
    outcome = repair.Outcome.FAILED
    try:
        outcome = repair.check(issuer_id, card_id, Source(source))
    finally:
        if batch_id is not None:
            RecheckBatch.objects.filter(pk=batch_id).update(
                done=F("done") + 1,
                changed=F("changed") + int(outcome == repair.Outcome.CHANGED),
                failed=F("failed")
                + int(outcome in (repair.Outcome.FAILED, repair.Outcome.NOT_FOUND)),
            )
    return {"outcome": str(outcome)}


@task()
def refresh_cards(sweep_id: int, order_ids: list[int]) -> dict[str, int]:
    """refresh_card for a batch of the cards a reconciliation sweep claimed (source
    `reconcile`), a few at a time; the outcomes are added up on the sweep."""
    return repair.check_claimed(sweep_id, order_ids)


@task()
def recompute_attention(name: str) -> int:
    """Apply an edited threshold to the orders it governs."""
    return attention.recompute(name)
