"""Register orders from the issuer's own records: a CSV file imported in the admin site.

Columns: issuerId, cardId (required), issuerRequestId, groupId and orderId (BULK orders), and
customerReference (the issuer's own reference for the customer, which agents can search by).

- Every row is checked before anything is written (the admin's preview is a dry run that writes
  nothing); one bad row and nothing is imported, with each row's errors shown.
- A new order gets `first_seen_at` and its attention deadlines, so the queue says "never heard of"
  when D1 stays silent about it.
- An existing order gets the issuer's fields only, never D1 state; a blank cell leaves a value as
  it is, so the same file imported again changes nothing (its rows are reported as skipped).
- Each order created or changed gets a history row and an `admin` timeline event, like a
  correction made by hand.
"""

from collections import defaultdict
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from import_export import fields, resources, widgets
from import_export.instance_loaders import BaseInstanceLoader

from tracker import attention, corrections, pan
from tracker.d1.schema import CARD_ID
from tracker.models import CardOrder, TimelineEvent
from tracker.validators import no_card_number

# CSV column -> CardOrder field.
COLUMNS = {
    "issuerId": "issuer_id",
    "cardId": "card_id",
    "issuerRequestId": "issuer_request_id",
    "groupId": "bulk_group_id",
    "orderId": "bulk_order_id",
    "customerReference": "customer_reference",
}
_COLUMN_OF = {name: column for column, name in COLUMNS.items()}
REQUIRED = ("issuerId", "cardId")
ISSUER_FIELDS = ("issuer_request_id", "bulk_group_id", "bulk_order_id", "customer_reference")
_CHUNK = 1000
# An import runs inside the admin's request: about 1.5 ms a row here, so 15 s at most.
MAX_ROWS = 10_000


def _column(column: str) -> fields.Field:
    return fields.Field(
        attribute=COLUMNS[column], column_name=column, widget=widgets.CharWidget(allow_blank=True)
    )


def _key(row: dict[str, Any]) -> tuple[str, str]:
    return (str(row.get("issuerId") or "").strip(), str(row.get("cardId") or "").strip())


class _OrderLoader(BaseInstanceLoader):
    """The file's existing orders, read up front: one query per issuer and 1,000 cards.

    For the real import they are locked in the ingest's order (issuer, card), so a notification
    for one of them waits for the import instead of being overwritten by it.
    """

    def __init__(self, resource: "OrderResource", dataset=None) -> None:
        super().__init__(resource, dataset)
        cards = defaultdict(set)
        for row in dataset.dict if dataset is not None and dataset.headers else []:
            issuer_id, card_id = _key(row)
            if issuer_id and card_id:
                cards[issuer_id].add(card_id)
        orders = CardOrder.objects.order_by("issuer_id", "card_id")
        if not resource.dry_run:
            orders = orders.select_for_update()
        self.orders: dict[tuple[str, str], CardOrder] = {}
        for issuer_id, ids in sorted(cards.items()):
            ids = sorted(ids)
            for start in range(0, len(ids), _CHUNK):
                chunk = orders.filter(issuer_id=issuer_id, card_id__in=ids[start : start + _CHUNK])
                self.orders.update(((o.issuer_id, o.card_id), o) for o in chunk)
        # What each known order held before this import: a row's changes are measured from it.
        resource.originals = {
            key: {name: getattr(order, name) for name in ISSUER_FIELDS}
            for key, order in self.orders.items()
        }

    def get_instance(self, row: dict[str, Any]) -> CardOrder | None:
        return self.orders.get(_key(row))


class OrderResource(resources.ModelResource):
    issuer_id = _column("issuerId")
    card_id = _column("cardId")
    issuer_request_id = _column("issuerRequestId")
    bulk_group_id = _column("groupId")
    bulk_order_id = _column("orderId")
    customer_reference = _column("customerReference")

    class Meta:
        model = CardOrder
        name = "Card orders (CSV)"
        fields = tuple(COLUMNS.values())
        import_id_fields = ("issuer_id", "card_id")
        instance_loader_class = _OrderLoader
        use_transactions = True
        use_bulk = True
        batch_size = _CHUNK
        skip_unchanged = True
        report_skipped = True
        # Rows are validated by import_instance() below; a full_clean() would cost a query each.
        clean_model_instances = False

    def import_data(self, dataset, dry_run: bool = False, **kwargs):
        self.dry_run = dry_run
        self.now = timezone.now()
        self.lines: dict[tuple[str, str], int] = {}
        self.saved: list[tuple[CardOrder, dict[str, tuple[str, str]], bool]] = []
        self.originals: dict[tuple[str, str], dict[str, str]] = {}  # filled by _OrderLoader
        return super().import_data(dataset, dry_run=dry_run, **kwargs)

    def before_import(self, dataset, **kwargs) -> None:
        headers = [header.strip() for header in dataset.headers or []]
        dataset.headers = headers
        unknown = [header for header in headers if header not in COLUMNS]
        missing = [column for column in REQUIRED if column not in headers]
        if len(dataset) > MAX_ROWS:
            raise ValueError(
                _("The file has %(rows)d rows; import at most %(max)d at a time.")
                % {"rows": len(dataset), "max": MAX_ROWS}
            )
        if unknown or missing:
            raise ValueError(
                _("The first line must name the columns: %(columns)s. %(problem)s")
                % {
                    "columns": ", ".join(COLUMNS),
                    "problem": _("Unknown: %(names)s.") % {"names": ", ".join(unknown)}
                    if unknown
                    else _("Missing: %(names)s.") % {"names": ", ".join(missing)},
                }
            )
        # Cells as the person typed them, less the spaces around (the preview shows them so), and
        # masked first, so a card number in any cell is neither stored nor shown in the preview; a
        # masked cardId is then refused as not a D1 cardId.
        for index, row in enumerate(dataset):
            dataset[index] = tuple(
                pan.mask_pans(value.strip()) if isinstance(value, str) else value for value in row
            )

    def import_field(self, field, instance, row, is_m2m=False, **kwargs) -> None:
        # A blank cell says nothing about an order Tracker knows: its value stays.
        if instance.pk and field.attribute in ISSUER_FIELDS and not row.get(field.column_name):
            return
        super().import_field(field, instance, row, is_m2m, **kwargs)

    def import_instance(self, instance: CardOrder, row, **kwargs) -> None:
        super().import_instance(instance, row, **kwargs)
        errors = self._errors(instance, kwargs["row_number"])
        if errors:
            # Named by the file's columns, which is what the person importing it knows.
            raise ValidationError({_COLUMN_OF[name]: messages for name, messages in errors.items()})

    def _errors(self, order: CardOrder, row_number: int) -> dict[str, list[str]]:
        errors = defaultdict(list)
        if order.issuer_id not in settings.D1_ISSUER_IDS:
            errors["issuer_id"].append(_("This deployment does not serve this issuer."))
        if not CARD_ID.fullmatch(order.card_id):
            errors["card_id"].append(_("Not a D1 cardId (1 to 48 letters, digits, - or _)."))
        key = (order.issuer_id, order.card_id)
        if key in self.lines:
            errors["card_id"].append(
                _("This card is already on row %(row)d.") % {"row": self.lines[key]}
            )
        self.lines.setdefault(key, row_number)
        for name in ISSUER_FIELDS:
            limit = CardOrder._meta.get_field(name).max_length
            if len(getattr(order, name)) > limit:
                errors[name].append(_("At most %(limit)d characters.") % {"limit": limit})
            if "\x00" in getattr(order, name):
                errors[name].append(_("Contains a NUL character, which no value can hold."))
        known = self._original(order).get("issuer_request_id")
        if known and order.issuer_request_id != known:
            errors["issuer_request_id"].append(
                _("D1 already reported %(value)s for this card.") % {"value": known}
            )
        try:
            no_card_number(order.customer_reference)
        except ValidationError as e:
            errors["customer_reference"].extend(e.messages)
        return dict(errors)

    def _original(self, order: CardOrder) -> dict[str, str]:
        return self.originals.get((order.issuer_id, order.card_id), {})

    def before_save_instance(self, instance: CardOrder, row, **kwargs) -> None:
        created = instance.pk is None
        original = self._original(instance)
        changes = {
            name: (original.get(name, ""), getattr(instance, name))
            for name in ISSUER_FIELDS
            if getattr(instance, name) != original.get(name, "")
        }
        if created:
            instance.first_seen_at = self.now
            attention.update(instance)
        self.saved.append((instance, changes, created))

    def bulk_create(self, using_transactions, dry_run, *args, **kwargs) -> None:
        if dry_run:  # the preview writes nothing
            self.create_instances.clear()
            return
        super().bulk_create(using_transactions, dry_run, *args, **kwargs)

    def bulk_update(
        self, using_transactions, dry_run, raise_errors, batch_size=None, result=None
    ) -> None:
        if dry_run or not self.update_instances:
            self.update_instances.clear()
            return
        try:
            # As the ingest writes back: the rows exist and are locked, so this upsert only ever
            # updates, one statement a batch (bulk_update() builds a CASE per field and row).
            CardOrder.objects.bulk_create(
                self.update_instances,
                update_conflicts=True,
                unique_fields=["id"],
                update_fields=list(ISSUER_FIELDS),
                batch_size=batch_size,
            )
        except Exception as e:  # noqa: BLE001 - reported as the import's error, all rolled back
            self.handle_import_error(result, e, raise_errors)
        finally:
            self.update_instances.clear()

    def after_import(self, dataset, result, **kwargs) -> None:
        # ModelResource's own after_import resets the id sequence, which would hand out ids that
        # concurrent notifications are using; the ids here come from the sequence anyway.
        if self.dry_run or result.has_errors() or result.has_validation_errors():
            return
        user = kwargs.get("user")
        reason = _("CSV import: %(file)s") % {"file": kwargs.get("file_name") or "?"}
        records = corrections.Correction.objects.bulk_create(
            [
                corrections.history_row(order, changes, user, reason, self.now, created=created)
                for order, changes, created in self.saved
            ],
            batch_size=_CHUNK,
        )
        TimelineEvent.objects.bulk_create(
            [
                corrections.timeline_event(
                    order, record, user, reason, corrections.describe(changes)
                )
                for (order, changes, _created), record in zip(self.saved, records, strict=True)
            ],
            batch_size=_CHUNK,
        )
