"""The Django admin site of Tracker (/admin/): one module per concern, each registering its models.

Administrators change data here, supervisors see it read-only, agents have no access (roles.py).
"""

from tracker.admin import inbox, orders, records, users

__all__ = ["inbox", "orders", "records", "users"]
