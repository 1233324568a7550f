from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


class TrackerConfig(AppConfig):
    name = "tracker"
    verbose_name = _("Tracker")

    def ready(self) -> None:
        # The permission cache's and the sign-in stamp's signal receivers.
        from tracker import login, permission_cache  # noqa: F401
        from tracker.pan import install_log_masking

        install_log_masking()

        post_migrate.connect(_sync_groups, sender=self)


def _sync_groups(sender, using: str, apps=None, **kwargs) -> None:
    # Permissions added by later migrations reach the groups without a data migration each;
    # `flush` sends the signal without a migration state, so fall back to the live registry.
    from django.apps import apps as live_apps

    from tracker.roles import sync_groups

    sync_groups(apps or live_apps, using)
