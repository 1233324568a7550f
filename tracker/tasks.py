"""Background work (django.tasks with the django-tasks-db backend; `manage.py db_worker` runs it).

Tasks take ids and ISO strings, never model instances, call D1 and the ingest, and nothing else.
"""

import logging
from typing import Any

from django.db.models import F
from django.tasks import task

from tracker import attention, live
from tracker.d1.client import D1Error, D1NotFound, Profile
from tracker.models import RecheckBatch, Source

logger = logging.getLogger(__name__)


@task()
def refresh_card(
    issuer_id: str, card_id: str, source: str = Source.RECONCILE, batch_id: int | None = None
) -> dict[str, Any]:
    """Fetch one card from D1 (background profile: within D1_MAX_RPS) and apply what it says."""
    outcome = "failed"
    try:
        refreshed = live.refresh(
            issuer_id, card_id, source=Source(source), profile=Profile.BACKGROUND
        )
        outcome = "changed" if refreshed.changed else "unchanged"
    except D1NotFound:
        outcome = "not_found"
    except D1Error as e:
        logger.warning("refresh of %s/%s failed: %s", issuer_id, card_id, e)
    finally:
        if batch_id is not None:
            RecheckBatch.objects.filter(pk=batch_id).update(
                done=F("done") + 1,
                changed=F("changed") + int(outcome == "changed"),
                failed=F("failed") + int(outcome in ("failed", "not_found")),
            )
    return {"outcome": outcome}


@task()
def recompute_attention(name: str) -> int:
    """Apply an edited threshold to the orders it governs."""
    return attention.recompute(name)
