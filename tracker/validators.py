"""Validators shared by the staff's forms and the CSV import."""

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from tracker import pan


def no_card_number(value: str) -> None:
    """Refuse text that holds what looks like a card number: Tracker never stores one."""
    if pan.is_or_was_pan(value or ""):
        raise ValidationError(
            _("This looks like a card number. Tracker never stores card numbers: remove it."),
            code="card_number",
        )
