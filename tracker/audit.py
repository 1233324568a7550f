"""The lookup audit: which staff member read which card, when, and what came of it."""

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from tracker import pan
from tracker.models import LookupAudit


def record(
    user: AbstractBaseUser | AnonymousUser,
    issuer_id: str,
    card_id: str,
    action: LookupAudit.Action,
    outcome: LookupAudit.Outcome,
    detail: str = "",
) -> None:
    """Write one audit row: a single INSERT that reads nothing (the user is already loaded)."""
    LookupAudit.objects.create(
        user_id=user.pk,
        username=user.get_username(),
        issuer_id=issuer_id,
        card_id=pan.mask_pans(card_id),
        action=action,
        outcome=outcome,
        detail=pan.mask_pans(detail),
    )
