"""Default attention thresholds, so administrators find every row ready to edit."""

from django.db import migrations

DEFAULT_HOURS = {
    "CARD_PROD_REQUESTED": 4,
    "DATA_PREPARED": 24,
    "CARD_PROD_READY": 24,
    "CARD_PROD_ONGOING": 12,
    "CARD_PROD_DONE": 24,
    "carrier_quiet": 96,
    "never_heard": 24,
}


def create(apps, schema_editor):
    Threshold = apps.get_model("tracker", "Threshold")
    for name, hours in DEFAULT_HOURS.items():
        Threshold.objects.get_or_create(name=name, defaults={"hours": hours})


class Migration(migrations.Migration):
    dependencies = [("tracker", "0005_issue6_queue")]

    operations = [migrations.RunPython(create, migrations.RunPython.noop)]
