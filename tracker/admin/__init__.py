"""The Django admin site of Tracker (/admin/): one module per concern, each registering its models.

Administrators change data here, supervisors see it read-only, agents have no access (roles.py).
"""

from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.db.models.signals import pre_save
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _

from tracker import pan
from tracker.admin import alerts, inbox, orders, records, users

admin.site.site_header = _("Tracker administration")
admin.site.site_title = _("Tracker administration")

__all__ = ["alerts", "inbox", "orders", "records", "users"]


@receiver(pre_save, sender=LogEntry)
def _mask_log_entry(sender, instance: LogEntry, **kwargs) -> None:
    # The admin's own log (django_admin_log) names the object it changed, and the change.
    instance.object_repr = pan.mask_pans(instance.object_repr)
    instance.change_message = pan.mask_pans(instance.change_message)
