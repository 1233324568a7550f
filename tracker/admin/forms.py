"""The admin site's forms: an administrator's correction, a revert's reason, a resolve note.

A bad value is named back to the administrator, never a 500.
"""

import hashlib
import json

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from tracker.d1 import lifecycle
from tracker.models import CardOrder
from tracker.validators import no_card_number


def _reason_field(label: str, help_text: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        help_text=help_text,
        max_length=2000,
        validators=[no_card_number],
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
    )


def loaded_state(order: CardOrder) -> str:
    """A fingerprint of the correctable fields, to notice that the order changed meanwhile."""
    values = [str(getattr(order, name)) for name in CardOrder.CORRECTABLE]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()


class CardOrderForm(forms.ModelForm):
    """An administrator's correction: some correctable fields, and why."""

    stage = forms.ChoiceField(label=_("Stage"), required=False)
    change_reason = _reason_field(
        _("Reason for this change"),
        _("Required. Shown with the change on the card's timeline and in its history."),
    )
    loaded_state = forms.CharField(widget=forms.HiddenInput, required=False)

    class Meta:
        model = CardOrder
        fields = CardOrder.CORRECTABLE

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        stages = [("", _("no stage yet"))] + [(stage, stage) for stage in lifecycle.KNOWN]
        current = self.instance.stage
        if current and current not in lifecycle.KNOWN:
            stages.append((current, current))
        self.fields["stage"].choices = stages
        self.initial["loaded_state"] = loaded_state(self.instance)

    def clean_customer_reference(self) -> str:
        value = self.cleaned_data["customer_reference"]
        no_card_number(value)
        return value

    def corrected(self) -> dict:
        """The correctable fields this form changes, with their new values."""
        return {
            name: self.cleaned_data[name]
            for name in self.changed_data
            if name in CardOrder.CORRECTABLE and name in self.cleaned_data
        }

    def clean(self) -> dict:
        data = super().clean()
        # The instance still holds the row as locked for this request (the admin's get_object).
        if data.get("loaded_state") != loaded_state(self.instance):
            raise ValidationError(
                _(
                    "This order changed while you were editing it (D1 sent news, or another "
                    "administrator saved a change). Reload the page and make your change again."
                ),
                code="stale",
            )
        if not self.corrected():
            raise ValidationError(_("Nothing to change: edit a field, or cancel."), code="same")
        return data


class ReasonForm(forms.Form):
    """The reason an administrator gives for reverting a change."""

    reason = _reason_field(
        _("Reason"), _("Required. Shown with the revert on the card's timeline and in its history.")
    )


class ResolveForm(forms.Form):
    """The note an administrator gives when marking orders resolved."""

    note = _reason_field(
        _("Note"),
        _(
            "Required. Each order is acknowledged in the supervisors' queue with this note, "
            "until its state changes, and the note goes on its timeline."
        ),
    )
