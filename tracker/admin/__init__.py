"""The Django admin site of Tracker (/admin/): one module per concern, each registering its models.

Administrators change data here, supervisors see it read-only, agents have no access (roles.py).
"""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from tracker.admin import alerts, inbox, orders, records, users

admin.site.site_header = _("Tracker administration")
admin.site.site_title = _("Tracker administration")

__all__ = ["alerts", "inbox", "orders", "records", "users"]
