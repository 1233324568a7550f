"""Validators shared by the staff's forms and the CSV import."""

import re

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

# 13 to 19 digits, alone or grouped by single spaces or dashes, as card numbers are written.
_DIGIT_RUN = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?![ -]?\d)")


def no_card_number(value: str) -> None:
    """Refuse text that holds what looks like a card number: Tracker never stores one."""
    for match in _DIGIT_RUN.finditer(value or ""):
        if _luhn(re.sub(r"\D", "", match.group())):
            raise ValidationError(
                _("This looks like a card number. Tracker never stores card numbers: remove it."),
                code="card_number",
            )


def _luhn(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        n = int(digit)
        if position % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0
