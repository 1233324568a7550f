"""Leave a fresh database complete: the three role groups and the cache table (CONTRACT §5)."""

from django.core.management import call_command
from django.db import migrations


def create_groups(apps, schema_editor):
    from tracker.roles import sync_groups

    sync_groups(apps, schema_editor.connection.alias)


def create_cache_table(apps, schema_editor):
    # Does nothing when REDIS_URL selects Redis instead of the database cache.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [
        ("tracker", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("django_tasks_database", "__latest__"),
    ]

    operations = [
        migrations.RunPython(create_groups, migrations.RunPython.noop),
        migrations.RunPython(create_cache_table, migrations.RunPython.noop),
    ]
