"""The three roles of CONTRACT §4 as Django groups, and the permissions each one holds.

Least privilege: agents read cards and refresh them live; supervisors also work the queue and
see the admin site read-only; administrators also change data (orders are never deleted).
"""

from django.contrib.auth.management import create_permissions

AGENTS = "Support agents"
SUPERVISORS = "Supervisors"
ADMINISTRATORS = "Administrators"

_AGENT_PERMISSIONS = {"view_cardorder", "view_timelineevent", "refresh_live"}
_SUPERVISOR_PERMISSIONS = {"work_queue", "recheck_orders", "export_orders"}
# Administrators change everything in the tracker app but never delete what D1 told us, and
# nobody writes the lookup audit except the pages themselves.
_NEVER_GRANTED = {
    "delete_cardorder",
    "delete_timelineevent",
    "delete_inboxitem",
    "add_lookupaudit",
    "change_lookupaudit",
    "delete_lookupaudit",
}


def sync_groups(apps, using: str = "default") -> None:
    """Create the groups and (re)assign their permissions; safe to run after every migrate."""
    # Permissions are normally created after the last migration; create them now so that a
    # fresh `migrate` leaves complete groups (historical app configs have no models_module).
    for app_config in apps.get_app_configs():
        original = getattr(app_config, "models_module", None)
        app_config.models_module = original or True
        create_permissions(app_config, verbosity=0, using=using, apps=apps)
        app_config.models_module = original
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    tracker = Permission.objects.using(using).filter(content_type__app_label="tracker")
    views = tracker.filter(codename__startswith="view_")
    agents = tracker.filter(codename__in=_AGENT_PERMISSIONS)
    supervisors = agents | views | tracker.filter(codename__in=_SUPERVISOR_PERMISSIONS)
    history_views = Permission.objects.using(using).filter(
        content_type__app_label__in=["auth", "django_tasks_database"], codename__startswith="view_"
    )
    administrators = (
        tracker.exclude(codename__in=_NEVER_GRANTED)
        | history_views
        | Permission.objects.using(using).filter(
            content_type__app_label="auth",
            codename__in=["add_user", "change_user", "change_group"],
        )
    )
    for name, permissions in (
        (AGENTS, agents),
        (SUPERVISORS, supervisors | history_views),
        (ADMINISTRATORS, administrators),
    ):
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.set(permissions.distinct())
