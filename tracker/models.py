"""The cache of D1 state: card orders, their timelines, and every notification body received.

Only tracker/ingest.py writes D1 state into these tables; administrators' corrections go through
tracker/corrections.py, under the same row locks, and are the only changes kept as history.
"""

from collections.abc import Iterable

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords


class Source(models.TextChoices):
    NOTIFICATION = "notification", _("notification")
    ON_DEMAND = "on_demand", _("live")
    RECONCILE = "reconcile", _("reconcile")
    ADMIN = "admin", _("admin")
    REPLAY = "replay", _("replay")


class Outcome(models.TextChoices):
    """What became of one operation object: the one vocabulary of the ingest's verdicts.

    A timeline event records one of the first four; a notification body counts each of them
    (InboxItem has a counter named after every value), and the health JSON and the admin's
    filters are derived from this list.
    """

    APPLIED = "applied", _("applied")
    STALE = "stale", _("stale")
    UNRECOGNIZED = "unrecognized", _("unrecognized")
    CONFLICT = "conflict", _("conflict")
    DUPLICATE = "duplicate", _("duplicate")
    IGNORED = "ignored", _("ignored (not card tracking)")
    QUARANTINED = "quarantined", _("quarantined")


class CorrectionRecord(models.Model):
    """Columns of a history row beyond the order's snapshot: what one correction changed."""

    # {field: [before, after]}: the snapshot alone cannot say, since D1's own changes between two
    # corrections are not history rows (they are timeline events).
    changes = models.JSONField(_("changes"), default=dict)
    # The history_id of the correction this one undid, if it is a revert.
    reverts = models.BigIntegerField(_("reverts change"), null=True, blank=True)

    class Meta:
        abstract = True


class CorrectionHistory(HistoricalRecords):
    """History rows written only by tracker/corrections.py, never by a save().

    The ingest saves orders on the hot notification path; a save() there must stay one
    statement, and D1's changes are already kept as timeline events.
    """

    def __init__(self, *, kept: Iterable[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.kept = {"id", "issuer_id", "card_id", *kept}

    def finalize(self, sender, **kwargs) -> None:
        # Only the order's identity and the `kept` fields are copied: a field added to the order
        # later stays out of the history (and so do D1's free texts) until it is named there.
        if sender is self.cls:
            self.excluded_fields = [
                field.name for field in sender._meta.concrete_fields if field.name not in self.kept
            ]
        super().finalize(sender, **kwargs)

    def post_save(self, instance, created, using=None, **kwargs) -> None:
        return None


def _pattern_index(field: str) -> models.Index:
    # varchar_pattern_ops serves both `=` and `LIKE 'prefix%'` on PostgreSQL whatever the
    # database collation; other databases ignore opclasses.
    return models.Index(
        fields=[field], name=f"order_{field}_idx", opclasses=["varchar_pattern_ops"]
    )


# Orders that may need attention and are not acknowledged or snoozed (tracker/attention.py).
_OPEN = Q(attention_since__isnull=False, muted_until__isnull=True)


class CardOrder(models.Model):
    """One physical card order, keyed by (issuerId, cardId), as D1 last told us about it."""

    issuer_id = models.CharField(_("issuer ID"), max_length=10)
    card_id = models.CharField(_("card ID"), max_length=48)
    operation_id = models.CharField(_("operation ID"), max_length=64, blank=True)
    operation = models.CharField(_("operation"), max_length=32, blank=True)
    tracking_type = models.CharField(_("tracking type"), max_length=32, blank=True)

    # The highest-ranked known details.status in force, and what follows from it.
    stage = models.CharField(_("stage"), max_length=64, blank=True)
    stage_rank = models.PositiveSmallIntegerField(_("stage rank"), default=0)
    terminal = models.BooleanField(_("terminal"), default=False)
    operation_status = models.CharField(_("operation status"), max_length=32, blank=True)
    unrecognized_status = models.CharField(_("unrecognized status"), max_length=64, blank=True)
    conflict = models.BooleanField(_("conflict"), default=False)
    unknown_to_d1 = models.BooleanField(_("unknown to D1"), default=False)

    start_time = models.DateTimeField(_("start time"), null=True, blank=True)
    end_time = models.DateTimeField(_("end time"), null=True, blank=True)
    due_date = models.DateField(_("due date"), null=True, blank=True)
    due_at = models.DateTimeField(
        _("due at"), null=True, blank=True, help_text=_("Set when D1 sent dueDate as a datetime.")
    )
    late_after = models.DateTimeField(
        _("late after"), null=True, blank=True, help_text=_("When the order becomes late.")
    )
    production_site = models.CharField(_("production site"), max_length=64, blank=True)

    carrier = models.CharField(_("carrier"), max_length=64, blank=True)
    tracking_number = models.CharField(_("tracking number"), max_length=128, blank=True)
    shipment_status = models.CharField(_("shipment status"), max_length=64, blank=True)
    shipment_message = models.TextField(_("shipment message"), blank=True)
    tracking_url = models.TextField(_("tracking URL"), blank=True)
    shipment = models.JSONField(_("shipment (as sent)"), null=True, blank=True)
    shipment_updated_at = models.DateTimeField(_("shipment updated"), null=True, blank=True)

    error_code = models.TextField(_("error code"), blank=True)
    error = models.TextField(_("error"), blank=True)
    reason = models.TextField(_("reason"), blank=True)

    issuer_request_id = models.CharField(_("issuer request ID"), max_length=255, blank=True)
    input_file_name = models.CharField(_("input file name"), max_length=255, blank=True)
    # Known from the issuer's own order records (CSV import), never from D1.
    customer_reference = models.CharField(_("customer reference"), max_length=255, blank=True)
    bulk_group_id = models.CharField(_("BULK group ID"), max_length=64, blank=True)
    bulk_order_id = models.CharField(_("BULK order ID"), max_length=64, blank=True)

    first_seen_at = models.DateTimeField(_("first seen"), default=timezone.now)
    last_event_at = models.DateTimeField(_("last event received"), null=True, blank=True)
    last_checked_at = models.DateTimeField(_("last checked live"), null=True, blank=True)
    state_changed_at = models.DateTimeField(_("state changed"), null=True, blank=True)
    duplicates_received = models.PositiveIntegerField(_("duplicates received"), default=0)

    # Precomputed by tracker/attention.py so the queue is an index range scan: the moment the
    # order falls silent (stage threshold, carrier quiet or never heard), the moment it first
    # needed attention for any reason, and until when a supervisor muted it.
    silent_after = models.DateTimeField(_("silent after"), null=True, blank=True)
    attention_since = models.DateTimeField(_("needs attention since"), null=True, blank=True)
    muted_until = models.DateTimeField(_("acknowledged or snoozed until"), null=True, blank=True)

    # What administrators may correct by hand (tracker/corrections.py). The history keeps these
    # and the order's identity only: no raw JSON and none of D1's free texts (messages, errors,
    # URLs), so nothing that could hold a card number is copied there.
    CORRECTABLE = (
        "stage",
        "operation_status",
        "terminal",
        "conflict",
        "unrecognized_status",
        "unknown_to_d1",
        "due_date",
        "production_site",
        "carrier",
        "tracking_number",
        "shipment_status",
        "issuer_request_id",
        "input_file_name",
        "customer_reference",
        "bulk_group_id",
        "bulk_order_id",
    )
    history = CorrectionHistory(
        kept=CORRECTABLE,
        bases=[CorrectionRecord],
        history_id_field=models.BigAutoField(primary_key=True),
        history_change_reason_field=models.TextField(_("reason"), null=True),
        verbose_name=_("correction"),
        verbose_name_plural=_("corrections"),
    )

    class Meta:
        verbose_name = _("card order")
        verbose_name_plural = _("card orders")
        permissions = [
            ("refresh_live", _("Can fetch live status from D1")),
            ("work_queue", _("Can work the queue of orders needing attention")),
            ("recheck_orders", _("Can re-check many orders with D1")),
            ("export_orders", _("Can export orders as CSV")),
            ("import_orders", _("Can register orders from a CSV file")),
        ]
        constraints = [
            models.UniqueConstraint(fields=["issuer_id", "card_id"], name="order_issuer_card_uniq")
        ]
        indexes = [
            _pattern_index("card_id"),
            _pattern_index("issuer_request_id"),
            _pattern_index("operation_id"),
            _pattern_index("tracking_number"),
            _pattern_index("input_file_name"),
            _pattern_index("customer_reference"),
            # The queue's default view (attention_since <= now, not muted) read in its two main
            # orders: each first page is a short range scan, however many orders there are.
            models.Index(fields=["attention_since", "id"], condition=_OPEN, name="order_queue"),
            models.Index(fields=["late_after", "id"], condition=_OPEN, name="order_queue_due"),
            models.Index(
                fields=["silent_after"],
                condition=Q(silent_after__isnull=False),
                name="order_silent",
            ),
            models.Index(fields=["stage"], condition=Q(terminal=False), name="order_open_stage"),
            # The admin site's filters on rare flags: a few rows each, read newest first.
            models.Index(fields=["id"], condition=Q(conflict=True), name="order_conflict"),
            models.Index(
                fields=["id"], condition=~Q(unrecognized_status=""), name="order_unrecognized"
            ),
            models.Index(fields=["id"], condition=Q(unknown_to_d1=True), name="order_unknown_d1"),
            models.Index(
                fields=["muted_until"], condition=Q(muted_until__isnull=False), name="order_muted"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.issuer_id}/{self.card_id}"

    def known_as_of(self):
        """The last time Tracker heard from D1 about this order: an event or a live check."""
        heard = [moment for moment in (self.last_event_at, self.last_checked_at) if moment]
        return max(heard) if heard else self.first_seen_at

    def is_late(self, now=None) -> bool:
        """Past its due moment and not yet shipped or otherwise finished (REFERENCE §7)."""
        if self.terminal or self.late_after is None:
            return False
        return (now or timezone.now()) > self.late_after


class InboxItem(models.Model):
    """A notification body exactly as D1 posted it, stored before anything parses it."""

    class Outcome(models.TextChoices):
        RECEIVED = "received", _("received, not processed yet")
        PROCESSED = "processed", _("processed")
        PARTIAL = "partial", _("processed, some items quarantined")
        REJECTED = "rejected", _("rejected (can never succeed)")
        FAILED = "failed", _("failed (to be replayed)")

    issuer_id = models.CharField(_("issuer ID"), max_length=10)
    received_at = models.DateTimeField(_("received"), default=timezone.now)
    body = models.BinaryField(_("body"))
    headers = models.JSONField(_("headers"), default=dict, blank=True)
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=Outcome.choices, default=Outcome.RECEIVED
    )
    error = models.TextField(_("error"), blank=True)
    # One entry per operation: {"index", "cardId", "status", "verdict"} or {"index", "error"}.
    results = models.JSONField(_("results"), default=list, blank=True)
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)
    applied = models.PositiveIntegerField(_("applied"), default=0)
    duplicate = models.PositiveIntegerField(_("duplicates"), default=0)
    stale = models.PositiveIntegerField(_("stale"), default=0)
    unrecognized = models.PositiveIntegerField(_("unrecognized"), default=0)
    conflict = models.PositiveIntegerField(_("conflicts"), default=0)
    quarantined = models.PositiveIntegerField(_("quarantined"), default=0)
    ignored = models.PositiveIntegerField(_("ignored (not card tracking)"), default=0)

    class Meta:
        verbose_name = _("inbox item")
        verbose_name_plural = _("notification inbox")
        indexes = [
            models.Index(fields=["issuer_id", "received_at"], name="inbox_issuer_received"),
            models.Index(fields=["outcome", "received_at"], name="inbox_outcome_received"),
            # The applier's queue: the bodies not applied yet, in arrival order (a few rows
            # however large the inbox grows).
            models.Index(fields=["id"], condition=Q(outcome="received"), name="inbox_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.issuer_id} {self.received_at:%Y-%m-%d %H:%M:%S} ({self.outcome})"


class TimelineEvent(models.Model):
    """One distinct event for an order: a D1 operation object or an administrator's change."""

    # No index of its own: the unique (order, content_hash) constraint leads with the order.
    order = models.ForeignKey(
        CardOrder, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    # Dedup key of the content (REFERENCE §4); unique per order so duplicates never double up.
    content_hash = models.CharField(max_length=64)
    source = models.CharField(_("source"), max_length=16, choices=Source.choices)
    verdict = models.CharField(_("verdict"), max_length=16, choices=Outcome.choices)
    received_at = models.DateTimeField(_("received"), default=timezone.now)
    operation_id = models.CharField(_("operation ID"), max_length=64, blank=True)
    status = models.CharField(_("status"), max_length=64, blank=True)
    operation_status = models.CharField(_("operation status"), max_length=32, blank=True)
    shipment_status = models.CharField(_("shipment status"), max_length=64, blank=True)
    start_time = models.DateTimeField(_("start time"), null=True, blank=True)
    end_time = models.DateTimeField(_("end time"), null=True, blank=True)
    raw = models.JSONField(_("operation (as sent)"), null=True, blank=True)
    inbox = models.ForeignKey(
        InboxItem, on_delete=models.SET_NULL, null=True, blank=True, related_name="events"
    )
    # Only administrators' entries have a user: a partial index, so that the D1 events written by
    # every notification do not each add a NULL to it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, db_index=False
    )
    note = models.TextField(_("note"), blank=True)

    class Meta:
        verbose_name = _("timeline event")
        verbose_name_plural = _("timeline events")
        constraints = [
            models.UniqueConstraint(fields=["order", "content_hash"], name="event_order_hash_uniq")
        ]
        indexes = [
            models.Index(fields=["user"], condition=Q(user__isnull=False), name="event_user"),
        ]

    def __str__(self) -> str:
        return f"{self.order_id} {self.status or self.source} ({self.verdict})"

    @property
    def business_time(self):
        """D1's own time for the event: endTime once the operation completed, else startTime."""
        return self.end_time or self.start_time


class LookupAudit(models.Model):
    """One staff read of a card (page view, live refresh, live lookup): who, which card, when."""

    class Action(models.TextChoices):
        VIEW = "view", _("view")
        REFRESH = "refresh", _("live refresh")
        LOOKUP = "lookup", _("live lookup")

    class Outcome(models.TextChoices):
        FOUND = "found", _("found")
        NOT_FOUND = "not_found", _("not in Tracker")
        DENIED = "denied", _("permission denied")
        CHANGED = "changed", _("updated from D1")
        UNCHANGED = "unchanged", _("D1 had nothing new")
        D1_NOT_FOUND = "d1_not_found", _("unknown to D1")
        D1_UNAVAILABLE = "d1_unavailable", _("D1 unavailable")

    # The username is copied so the record survives the user's deletion and needs no join.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    username = models.CharField(_("username"), max_length=150)
    issuer_id = models.CharField(_("issuer ID"), max_length=10)
    card_id = models.CharField(_("card ID"), max_length=48)
    at = models.DateTimeField(_("time"), default=timezone.now)
    action = models.CharField(_("action"), max_length=16, choices=Action.choices)
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    detail = models.TextField(_("detail"), blank=True)

    class Meta:
        verbose_name = _("lookup audit record")
        verbose_name_plural = _("lookup audit")
        indexes = [
            models.Index(fields=["issuer_id", "card_id", "at"], name="audit_card_at"),
            models.Index(fields=["at"], name="audit_at"),
            models.Index(fields=["username", "at"], name="audit_username_at"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.card_id}"


class Threshold(models.Model):
    """How long an order may go without news before it needs attention (editable in the admin)."""

    CARRIER_QUIET = "carrier_quiet"
    NEVER_HEARD = "never_heard"
    NAMES = [
        ("CARD_PROD_REQUESTED", _("Requested: silent for (working hours)")),
        ("DATA_PREPARED", _("Data prepared: silent for (working hours)")),
        ("CARD_PROD_READY", _("Ready for production: silent for (working hours)")),
        ("CARD_PROD_ONGOING", _("In production: silent for (working hours)")),
        ("CARD_PROD_DONE", _("Produced: silent for (working hours)")),
        (CARRIER_QUIET, _("Shipped: no carrier movement for (hours)")),
        (NEVER_HEARD, _("Registered: never heard of from D1 for (hours)")),
    ]

    name = models.CharField(_("applies to"), max_length=64, unique=True, choices=NAMES)
    hours = models.PositiveIntegerField(_("hours"))
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("attention threshold")
        verbose_name_plural = _("attention thresholds")
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.name}: {self.hours} h"


class Acknowledgement(models.Model):
    """A supervisor's acknowledgement or snooze of an order in the queue; never edited."""

    class Kind(models.TextChoices):
        ACKNOWLEDGE = "acknowledge", _("acknowledged")
        SNOOZE = "snooze", _("snoozed")
        REOPEN = "reopen", _("reopened")

    order = models.ForeignKey(CardOrder, on_delete=models.CASCADE, related_name="acknowledgements")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    note = models.TextField(_("note"), blank=True)
    until = models.DateTimeField(_("until"), null=True, blank=True)
    created_at = models.DateTimeField(_("when"), default=timezone.now)

    class Meta:
        verbose_name = _("acknowledgement")
        verbose_name_plural = _("acknowledgements")
        indexes = [models.Index(fields=["order", "-created_at"], name="ack_order_recent")]

    def __str__(self) -> str:
        return f"{self.order} {self.kind} by {self.user}"


class RecheckBatch(models.Model):
    """A bulk re-check with D1 asked for from the queue, and how far its tasks have got."""

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(_("started"), default=timezone.now)
    total = models.PositiveIntegerField(_("cards"), default=0)
    done = models.PositiveIntegerField(_("checked"), default=0)
    changed = models.PositiveIntegerField(_("changed"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)

    class Meta:
        verbose_name = _("re-check batch")
        verbose_name_plural = _("re-check batches")

    def __str__(self) -> str:
        return f"re-check {self.pk}: {self.done}/{self.total}"

    @property
    def finished(self) -> bool:
        return self.done >= self.total


class Sweep(models.Model):
    """One run of the missed-notification sweep (tracker/reconcile/sweep.py) and what it found."""

    class Stop(models.TextChoices):
        BREAKER = "breaker", _("D1 unavailable (circuit breaker open)")
        STALLED = "stalled", _("no worker made progress")
        INTERRUPTED = "interrupted", _("interrupted")
        LOST = "lost", _("its process went away")

    started_at = models.DateTimeField(_("started"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    # Renewed while the sweep runs; a sweep silent past TRACKER_RECONCILE_CLAIM_TIMEOUT has died.
    heartbeat_at = models.DateTimeField(_("last sign of life"), default=timezone.now)
    issuer_id = models.CharField(
        _("issuer ID"), max_length=10, blank=True, help_text=_("Blank: every issuer.")
    )
    limit = models.PositiveIntegerField(_("limit"), null=True, blank=True)
    queued = models.PositiveIntegerField(_("queued"), default=0)
    # checked = D1 answered (repaired, unchanged or unknown to D1); failed = D1 could not be asked;
    # skipped = released before a worker got to it (the sweep stopped).
    checked = models.PositiveIntegerField(_("checked"), default=0)
    repaired = models.PositiveIntegerField(_("repaired"), default=0)
    not_found = models.PositiveIntegerField(_("unknown to D1"), default=0)
    failed = models.PositiveIntegerField(_("failed"), default=0)
    skipped = models.PositiveIntegerField(_("skipped"), default=0)
    stop_reason = models.CharField(
        _("stopped early"), max_length=16, choices=Stop.choices, blank=True
    )
    stop_detail = models.TextField(_("why"), blank=True)

    class Meta:
        verbose_name = _("reconciliation sweep")
        verbose_name_plural = _("reconciliation sweeps")
        ordering = ["-started_at", "-id"]
        indexes = [
            models.Index(fields=["-started_at", "-id"], name="sweep_recent"),
            # Each sweep looks for running sweeps that died: a handful of rows, never the history.
            models.Index(
                fields=["heartbeat_at"], condition=Q(finished_at__isnull=True), name="sweep_running"
            ),
        ]

    def __str__(self) -> str:
        return f"sweep {self.pk} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def done(self) -> int:
        """Cards the workers have finished with, whatever the outcome."""
        return self.checked + self.failed + self.skipped

    @property
    def running(self) -> bool:
        return self.finished_at is None


class SweepClaim(models.Model):
    """A card taken by a running sweep: no other sweep takes it, and this one checks it once.

    The order is the primary key, so taking a card is an INSERT that only one sweep can win.
    """

    order = models.OneToOneField(
        CardOrder, on_delete=models.CASCADE, primary_key=True, related_name="sweep_claim"
    )
    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="claims")

    class Meta:
        verbose_name = _("sweep claim")

    def __str__(self) -> str:
        return f"{self.order_id} in sweep {self.sweep_id}"


class RateBudget(models.Model):
    """The next free moment to call D1, shared by every process (see tracker/budget.py)."""

    name = models.CharField(max_length=32, primary_key=True)
    next_at = models.FloatField(default=0.0, help_text="Unix time")

    class Meta:
        verbose_name = _("rate budget")

    def __str__(self) -> str:
        return self.name


class AuthFailureCount(models.Model):
    """Refused authentications at the D1-facing endpoints, counted per issuer and hour.

    One row per (issuer, hour) incremented in place: a flood of bad requests costs one UPDATE
    each and never grows the table by more than a row an hour.
    """

    # The token endpoint serves every issuer; its failures are counted under this one.
    TOKEN_ENDPOINT = ""

    issuer_id = models.CharField(_("issuer ID"), max_length=10, blank=True)
    hour = models.DateTimeField(_("hour"))
    count = models.PositiveIntegerField(_("count"), default=0)

    class Meta:
        verbose_name = _("authentication failure count")
        verbose_name_plural = _("authentication failure counts")
        constraints = [
            models.UniqueConstraint(fields=["issuer_id", "hour"], name="authfailure_issuer_hour")
        ]
        indexes = [models.Index(fields=["hour"], name="authfailure_hour")]

    def __str__(self) -> str:
        return f"{self.issuer_id or 'token'} {self.hour:%Y-%m-%d %H}h: {self.count}"


class ExportAudit(models.Model):
    """One export of the supervisors' queue as CSV: who, with which filter, how many rows."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    username = models.CharField(_("username"), max_length=150)
    at = models.DateTimeField(_("time"), default=timezone.now)
    filters = models.TextField(_("filter"), blank=True, help_text=_("As in the queue's address."))
    # Written when the last row has gone out: empty for an export the browser broke off.
    rows = models.PositiveIntegerField(_("rows"), null=True, blank=True)

    class Meta:
        verbose_name = _("export audit record")
        verbose_name_plural = _("export audit")
        indexes = [models.Index(fields=["at"], name="export_audit_at")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} ({self.rows} rows)"


class AlertRule(models.Model):
    """One alert condition and its threshold (tracker/ops/alerts.py); administrators edit it."""

    class Kind(models.TextChoices):
        SWEEP_DRIFT = "sweep_drift", _("Sweep repaired more cards than (cards)")
        QUEUE_SIZE = "queue_size", _("Orders needing attention above (orders)")
        LATE_COUNT = "late_count", _("Late orders above (orders)")
        ISSUER_SILENT = "issuer_silent", _("No notification from an issuer for (working hours)")
        BREAKER_OPEN = "breaker_open", _("D1 circuit breaker open for (minutes)")
        APPLY_LAG = "apply_lag", _("Oldest unprocessed notification older than (seconds)")
        TASK_BACKLOG = "task_backlog", _("Tasks waiting for a worker above (tasks)")
        AUTH_FAILURES = "auth_failures", _("Refused authentications in the last hour above")

    kind = models.CharField(_("condition"), max_length=32, unique=True, choices=Kind.choices)
    threshold = models.PositiveIntegerField(_("threshold"))
    enabled = models.BooleanField(_("enabled"), default=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("alert rule")
        verbose_name_plural = _("alert rules")
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.kind} > {self.threshold}"


class Alert(models.Model):
    """One stretch of time during which a rule's condition held (for one issuer, if per issuer)."""

    rule = models.CharField(_("condition"), max_length=32, choices=AlertRule.Kind.choices)
    # The issuer for per-issuer conditions; blank otherwise.
    subject = models.CharField(_("about"), max_length=64, blank=True)
    started_at = models.DateTimeField(_("started"), default=timezone.now)
    resolved_at = models.DateTimeField(_("resolved"), null=True, blank=True)
    last_seen_at = models.DateTimeField(_("last seen"), default=timezone.now)
    threshold = models.PositiveIntegerField(_("threshold"))
    value = models.FloatField(_("value when it started"))
    last_value = models.FloatField(_("last value"))
    summary = models.TextField(_("summary"))

    class Meta:
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        ordering = ["-started_at", "-id"]
        constraints = [
            # While a condition holds there is one open alert for it: the de-duplication.
            models.UniqueConstraint(
                fields=["rule", "subject"],
                condition=Q(resolved_at__isnull=True),
                name="alert_one_open",
            )
        ]
        indexes = [models.Index(fields=["-started_at", "-id"], name="alert_recent")]

    def __str__(self) -> str:
        return f"{self.rule} {self.subject}".strip()

    @property
    def open(self) -> bool:
        return self.resolved_at is None


class AlertEvent(models.Model):
    """What happened to an alert: it fired, it was sent (or could not be), it resolved."""

    class Kind(models.TextChoices):
        FIRED = "fired", _("fired")
        RESOLVED = "resolved", _("resolved")
        SENT = "sent", _("sent")
        NOT_SENT = "not_sent", _("could not be sent")

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(_("time"), default=timezone.now)
    kind = models.CharField(_("what"), max_length=16, choices=Kind.choices)
    channel = models.CharField(_("channel"), max_length=16, blank=True)
    detail = models.TextField(_("detail"), blank=True)

    class Meta:
        verbose_name = _("alert event")
        verbose_name_plural = _("alert events")
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.alert} {self.kind}"


class LookupAuditDay(models.Model):
    """Lookup audit rows older than the retention age, added up per day: who read which card."""

    day = models.DateField(_("day"))
    username = models.CharField(_("username"), max_length=150)
    issuer_id = models.CharField(_("issuer ID"), max_length=10)
    card_id = models.CharField(_("card ID"), max_length=48)
    action = models.CharField(_("action"), max_length=16, choices=LookupAudit.Action.choices)
    outcome = models.CharField(_("outcome"), max_length=16, choices=LookupAudit.Outcome.choices)
    count = models.PositiveIntegerField(_("count"))
    first_at = models.DateTimeField(_("first"))
    last_at = models.DateTimeField(_("last"))

    class Meta:
        verbose_name = _("lookup audit day")
        verbose_name_plural = _("lookup audit (older, per day)")
        constraints = [
            models.UniqueConstraint(
                fields=["day", "username", "issuer_id", "card_id", "action", "outcome"],
                name="auditday_uniq",
            )
        ]
        indexes = [
            models.Index(fields=["issuer_id", "card_id", "day"], name="auditday_card"),
            models.Index(fields=["username", "day"], name="auditday_username"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.username} {self.action} {self.card_id} x{self.count}"
