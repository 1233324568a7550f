"""Leave a fresh database complete: the three role groups with their permissions, the cache
table, and the default attention thresholds, so administrators find every row ready to edit."""

from django.core.management import call_command
from django.db import migrations

# The thresholds as they were first set; administrators change them in the admin site.
DEFAULT_HOURS = {
    "CARD_PROD_REQUESTED": 4,
    "DATA_PREPARED": 24,
    "CARD_PROD_READY": 24,
    "CARD_PROD_ONGOING": 12,
    "CARD_PROD_DONE": 24,
    "carrier_quiet": 96,
    "never_heard": 24,
}


def create_groups(apps, schema_editor):
    from tracker.roles import sync_groups

    sync_groups(apps, schema_editor.connection.alias)


def create_cache_table(apps, schema_editor):
    # Does nothing when REDIS_URL selects Redis instead of the database cache.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


def create_thresholds(apps, schema_editor):
    Threshold = apps.get_model("tracker", "Threshold")
    for name, hours in DEFAULT_HOURS.items():
        Threshold.objects.get_or_create(name=name, defaults={"hours": hours})


class Migration(migrations.Migration):
    dependencies = [
        ("tracker", "0001_orders_timeline_inbox_and_records"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_tasks_database", "__latest__"),
    ]

    operations = [
        migrations.RunPython(create_groups, migrations.RunPython.noop),
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
        migrations.RunPython(create_thresholds, migrations.RunPython.noop),
    ]
