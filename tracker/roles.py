"""The three roles of CONTRACT §4 as Django groups, and the permissions each one holds.

Least privilege: agents read cards and refresh them live; supervisors also work the queue and
see the admin site read-only (every view_ permission, the history of corrections included);
administrators also correct orders, register them from CSV, replay notifications, edit thresholds
and manage users. Nobody deletes anything, and nobody writes the history of corrections or the
lookup audit by hand: code does. The admin site itself also needs the `is_staff` flag, which
supervisors and administrators have and agents do not.
"""

from django.contrib.auth.management import create_permissions

AGENTS = "Support agents"
SUPERVISORS = "Supervisors"
ADMINISTRATORS = "Administrators"

_AGENT_PERMISSIONS = {"view_cardorder", "view_timelineevent", "refresh_live"}
_SUPERVISOR_PERMISSIONS = {"work_queue", "recheck_orders", "export_orders"}
# An allow-list: a model added later is read-only for administrators until it is granted here.
_ADMINISTRATOR_PERMISSIONS = {
    "change_cardorder",  # corrections with a reason, revert, re-sync, mark resolved
    "import_orders",  # register orders from a CSV file
    "change_inboxitem",  # the replay action; a stored body is never edited
    "change_threshold",
    "change_alertrule",  # alert thresholds, on and off
}
# Users are managed through their groups. The groups' permissions are defined here and set again
# after every migrate: an edit in the admin site would be undone, and could grant deletion.
_ADMINISTRATOR_AUTH_PERMISSIONS = {"add_user", "change_user"}


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
    other_views = Permission.objects.using(using).filter(
        content_type__app_label__in=["auth", "django_tasks_database"], codename__startswith="view_"
    )
    supervisors = (
        agents | views | other_views | tracker.filter(codename__in=_SUPERVISOR_PERMISSIONS)
    )
    administrators = (
        supervisors
        | tracker.filter(codename__in=_ADMINISTRATOR_PERMISSIONS)
        | Permission.objects.using(using).filter(
            content_type__app_label="auth", codename__in=_ADMINISTRATOR_AUTH_PERMISSIONS
        )
    )
    for name, permissions in (
        (AGENTS, agents),
        (SUPERVISORS, supervisors),
        (ADMINISTRATORS, administrators),
    ):
        group, _ = Group.objects.using(using).get_or_create(name=name)
        group.permissions.set(permissions.distinct())
