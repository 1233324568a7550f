"""The queue's forms: its filters, acknowledge/snooze/reopen, and the bulk re-check.

A bad value is named back to the supervisor, never a 500.
"""

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from tracker import pan, queue
from tracker.attention import Reason
from tracker.d1 import lifecycle


def _stage_choices() -> list[tuple[str, str]]:
    stages = list(lifecycle.PROGRESS[:-1]) + [
        lifecycle.CARD_PROD_EXCEPTION,
        lifecycle.DATA_EXCEPTION,
    ]
    return [("", _("any stage"))] + [(s, s) for s in stages] + [("none", _("no stage yet"))]


class QueueFilterForm(forms.Form):
    issuer = forms.ChoiceField(label=_("Issuer"), required=False)
    site = forms.CharField(label=_("Production site"), max_length=64, required=False)
    stage = forms.ChoiceField(label=_("Stage"), required=False)
    reason = forms.ChoiceField(
        label=_("Reason"), required=False, choices=[("", _("any reason")), *Reason.choices]
    )
    age = forms.ChoiceField(
        label=_("Days since last event"),
        required=False,
        choices=[("", _("any age"))] + [(name, name) for name, *_ in queue.AGE_BUCKETS],
    )
    show = forms.ChoiceField(
        label=_("Show"),
        required=False,
        choices=[
            ("open", _("needing attention")),
            ("muted", _("acknowledged or snoozed")),
            ("all", _("all")),
        ],
    )
    sort = forms.ChoiceField(
        label=_("Sort by"),
        required=False,
        choices=[
            ("attention", _("needing attention longest")),
            ("due", _("due date")),
            ("silence", _("last event")),
            ("card", _("card ID")),
        ],
    )
    dir = forms.ChoiceField(
        label=_("Order"),
        required=False,
        choices=[("", _("ascending")), ("desc", _("descending"))],
    )
    after = forms.CharField(required=False, max_length=200, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["issuer"].choices = [("", _("all issuers"))] + [
            (issuer, issuer) for issuer in settings.D1_ISSUER_IDS
        ]
        self.fields["stage"].choices = _stage_choices()

    def filters(self) -> queue.Filters:
        """The valid part of the filter; invalid fields are left out (and shown as errors)."""
        self.is_valid()
        data = {name: value for name, value in self.cleaned_data.items() if value}
        return queue.Filters(
            issuer=data.get("issuer", ""),
            site=data.get("site", ""),
            stage=data.get("stage", ""),
            reason=data.get("reason", ""),
            age=data.get("age", ""),
            show=data.get("show", "open"),
            sort=data.get("sort", "attention"),
            descending=data.get("dir") == "desc",
        )

    @property
    def cursor(self) -> str:
        return self.cleaned_data.get("after", "") if hasattr(self, "cleaned_data") else ""


class AcknowledgeForm(forms.Form):
    action = forms.ChoiceField(
        choices=[
            ("acknowledge", _("Acknowledge")),
            ("snooze", _("Snooze")),
            ("reopen", _("Reopen")),
        ]
    )
    note = forms.CharField(label=_("Note"), required=False, max_length=2000)
    until = forms.DateField(label=_("Snooze until"), required=False)

    def clean(self) -> dict:
        data = super().clean()
        if data.get("note"):
            data["note"] = pan.mask_pans(data["note"])
        if data.get("action") == "acknowledge" and not data.get("note"):
            self.add_error("note", _("Say why the order needs no further attention."))
        if data.get("action") == "snooze":
            until = data.get("until")
            if until is None:
                self.add_error("until", _("Choose the date until which to snooze."))
            elif until <= timezone.localdate():
                self.add_error("until", _("Choose a date after today."))
        return data


class RecheckForm(forms.Form):
    order = forms.TypedMultipleChoiceField(coerce=int, required=False)
    everything = forms.BooleanField(required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The ids are checked against the database by the view; here only their shape matters:
        # digits, within a database id's range (a longer number would overflow SQLite's integer).
        self.fields["order"].valid_value = _an_id

    def clean(self) -> dict:
        data = super().clean()
        if not data.get("order") and not data.get("everything"):
            raise forms.ValidationError(_("Select at least one order to re-check."))
        return data


_LARGEST_ID = 2**63 - 1


def _an_id(value) -> bool:
    return str(value).isdigit() and 0 < int(value) <= _LARGEST_ID
