"""The order generator: a realistic card-order book written straight into PostgreSQL.

One INSERT … SELECT over generate_series per table (no Python per row), with the pattern and
partial indexes dropped during the load and rebuilt after it, then VACUUM ANALYZE: a million
orders and about four million timeline events take a few minutes on two cores.

Every value is a function of the order's number n (hashtext-based draws), so a dataset of any
size has the same shapes: the same stages, the same 500 orders per input file, the same 100
issuer request ids per prefix. That is what makes the 10,000-order baseline comparable.

What the book looks like (shares of orders):

- 86.5 % shipped and delivered, 1 % returned, 1.5 % cancelled: finished, quiet;
- 4 % in production (requested … produced, first seen in the last 4 days), 3 % shipped and in
  transit (first seen in the last 7 days), 0.5 % with a carrier problem;
- 2 % data exceptions, 1 % production exceptions, 0.05 % conflicts, 0.2 % unrecognized statuses,
  0.3 % registered by the issuer and never heard of from D1;
- exceptions, carrier problems and never-heard-of orders older than a week are acknowledged
  (muted), as supervisors would have done.

The attention fields (`late_after`, `silent_after`, `attention_since`) follow tracker/attention.py
(its default thresholds, the stage ranks of tracker/d1/lifecycle.py) with calendar hours (the
working-day calendar is ignored); about 3 % of the orders need attention.
"""

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from bench import db
from bench.procs import Context
from tracker import attention
from tracker.d1 import lifecycle
from tracker.models import Threshold

GENERATOR_VERSION = 1
ISSUERS = ("ISS7K2M40Q", "ISSB3NCH02")
SITES = ("PC-FR-GEM-01", "PC-DE-MUC-02", "PC-PL-TCZ-01", "PC-SG-SIN-01")
CARRIERS = ("la-poste-colissimo", "dhl", "ups", "royal-mail")
PASSWORD = "bench-password-1"  # the bench users' (their databases hold nothing else)
USERS = {"bench-agent": "Support agents", "bench-supervisor": "Supervisors"}

# Tables the generator owns. The thresholds, users and groups (made by `migrate`) stay.
_TRUNCATED = (
    "tracker_timelineevent",
    "tracker_acknowledgement",
    "tracker_cardorder",
    "tracker_inboxitem",
    "tracker_lookupaudit",
    "tracker_recheckbatch",
    "tracker_authfailurecount",
    "tracker_ratebudget",
    "tracker_cache",
    "django_tasks_database_dbtaskresult",
)
_LOADED = ("tracker_cardorder", "tracker_timelineevent")
_CHUNK = 250_000

# Tracker's own lifecycle ranks and default attention thresholds, as SQL over the `stage` column.
_STAGE_RANK = " ".join(
    ["CASE stage WHEN '' THEN 0"]
    + [f"WHEN '{status}' THEN {lifecycle.rank(status)}" for status in lifecycle.KNOWN]
    + [f"ELSE {lifecycle.EXCEPTION_RANK} END"]
)
_HOURS = attention.DEFAULT_HOURS
_STAGE_HOURS = " ".join(
    ["CASE stage"]
    + [f"WHEN '{stage}' THEN {_HOURS[stage]}" for stage in lifecycle.PROGRESS if stage in _HOURS]
    + [f"ELSE {_HOURS[lifecycle.CARD_PROD_REQUESTED]} END"]
)

_FUNCTIONS = """
CREATE OR REPLACE FUNCTION pg_temp.bench_u(n bigint, salt text) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (hashtext(n::text || salt) & 2147483647)::float8 / 2147483648.0 $$;
"""

# One row per order with everything both tables need. %(now)s is the generation instant.
_BASE = f"""
CREATE TEMP TABLE bench_gen ON COMMIT DROP AS
WITH draws AS (
    SELECT n,
        pg_temp.bench_u(n, 'kind') AS k, pg_temp.bench_u(n, 'age') AS a,
        pg_temp.bench_u(n, 'step') AS s, pg_temp.bench_u(n, 'last') AS l,
        pg_temp.bench_u(n, 'site') AS site_draw, pg_temp.bench_u(n, 'due') AS d
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
), kinds AS (
    SELECT *,
        CASE
            WHEN k < 0.0400 THEN 'flight'
            WHEN k < 0.0700 THEN 'transit'
            WHEN k < 0.0750 THEN 'problem'
            WHEN k < 0.0850 THEN 'returned'
            WHEN k < 0.1050 THEN 'data_exc'
            WHEN k < 0.1150 THEN 'prod_exc'
            WHEN k < 0.1300 THEN 'canceled'
            WHEN k < 0.1320 THEN 'unrecognized'
            WHEN k < 0.1325 THEN 'conflict'
            WHEN k < 0.1355 THEN 'unheard'
            ELSE 'delivered'
        END AS kind
    FROM draws
), seen AS MATERIALIZED (
    SELECT *,
        %(now)s::timestamptz - CASE
            WHEN kind IN ('flight', 'unrecognized') THEN interval '1 hour' + a * interval '4 days'
            WHEN kind IN ('transit', 'problem') THEN interval '1 day' + a * interval '6 days'
            WHEN kind = 'unheard' THEN interval '2 hours' + a * interval '20 days'
            ELSE interval '2 days' + a * interval '363 days'
        END AS first_seen,
        least(4, floor(a * 4 + s * 1.5))::int AS step
    FROM kinds
), staged AS MATERIALIZED (
    SELECT *,
        CASE kind
            WHEN 'flight' THEN (ARRAY['CARD_PROD_REQUESTED', 'DATA_PREPARED', 'CARD_PROD_READY',
                                      'CARD_PROD_ONGOING', 'CARD_PROD_DONE'])[step + 1]
            WHEN 'unrecognized' THEN 'CARD_PROD_ONGOING'
            WHEN 'returned' THEN 'CARD_RETURNED'
            WHEN 'data_exc' THEN 'DATA_EXCEPTION'
            WHEN 'conflict' THEN 'DATA_EXCEPTION'
            WHEN 'prod_exc' THEN 'CARD_PROD_EXCEPTION'
            WHEN 'canceled' THEN 'CARD_PROD_CANCELED'
            WHEN 'unheard' THEN ''
            ELSE 'CARD_SHIPPED'
        END AS stage,
        CASE
            WHEN kind = 'unheard' THEN NULL
            WHEN kind IN ('flight', 'unrecognized')
                THEN first_seen + (%(now)s::timestamptz - first_seen) * (0.2 + 0.75 * l)
            WHEN kind IN ('transit', 'problem')
                THEN least(first_seen + interval '36 hours',
                           %(now)s::timestamptz - interval '1 hour')
            WHEN kind = 'delivered' THEN first_seen + interval '1 day' + l * interval '1 day'
            WHEN kind = 'returned' THEN first_seen + interval '1 day' + l * interval '1 day'
            ELSE first_seen + interval '6 hours' + l * interval '30 hours'
        END AS last_event,
        (first_seen + CASE WHEN d < 0.85 THEN interval '1 day' WHEN d < 0.95 THEN interval '2 days'
                           ELSE interval '10 days' END)::date AS due,
        (ARRAY%(sites)s)[1 + floor(site_draw * 4)::int] AS site,
        (ARRAY%(carriers)s)[1 + floor(l * 4)::int] AS carrier_name,
        CASE WHEN pg_temp.bench_u(n, 'issuer') < 0.9 THEN %(issuer_1)s ELSE %(issuer_2)s END
            AS issuer,
        'crd-' || substr(md5(n::text || 'card'), 1, 20) AS card,
        md5(n::text || 'operation')::uuid::text AS op_id,
        '6A' || upper(substr(md5(n::text || 'tracking'), 1, 11)) AS tracking
    FROM seen
), timed AS MATERIALIZED (
    SELECT *,
        (due + 1)::timestamp AT TIME ZONE 'UTC' AS late,
        CASE
            WHEN kind IN ('flight', 'unrecognized')
                THEN last_event + interval '1 hour' * 1.4 * {_STAGE_HOURS}
            WHEN kind IN ('transit', 'problem')
                THEN last_event + interval '{_HOURS[Threshold.CARRIER_QUIET]} hours'
            WHEN kind = 'unheard' THEN first_seen + interval '{_HOURS[Threshold.NEVER_HEARD]} hours'
        END AS silent,
        CASE WHEN kind IN ('transit', 'problem', 'delivered', 'returned') THEN
            CASE kind WHEN 'transit' THEN 'InTransit' WHEN 'problem' THEN 'Exception'
                      WHEN 'returned' THEN 'ReturnToSender' ELSE 'Delivered' END
        END AS shipment_status
    FROM staged
)
SELECT *,
    CASE
        WHEN kind = 'flight' THEN least(silent, late)
        WHEN kind = 'unrecognized' THEN least(silent, late, last_event)
        WHEN kind IN ('transit', 'unheard') THEN silent
        WHEN kind = 'problem' THEN least(silent, last_event)
        WHEN kind IN ('data_exc', 'prod_exc', 'conflict') THEN last_event
    END AS attention,
    CASE WHEN kind IN ('data_exc', 'prod_exc', 'conflict', 'problem', 'unheard')
              AND coalesce(last_event, first_seen) < %(now)s::timestamptz - interval '7 days'
         THEN timestamptz '9999-12-31 00:00:00+00' END AS muted
FROM timed
"""

_ORDERS = f"""
INSERT INTO tracker_cardorder (
    id, issuer_id, card_id, operation_id, operation, tracking_type, stage, stage_rank, terminal,
    operation_status, unrecognized_status, conflict, unknown_to_d1, start_time, end_time,
    due_date, due_at, late_after, production_site, carrier, tracking_number, shipment_status,
    shipment_message, tracking_url, shipment, shipment_updated_at, error_code, error, reason,
    issuer_request_id, input_file_name, customer_reference, bulk_group_id, bulk_order_id,
    first_seen_at, last_event_at, last_checked_at, state_changed_at, duplicates_received,
    attention_since, muted_until, silent_after
)
SELECT
    n, issuer, card, CASE WHEN kind = 'unheard' THEN '' ELSE op_id END,
    CASE WHEN kind = 'unheard' THEN '' ELSE 'PRODUCE' END, '',
    stage,
    {_STAGE_RANK},
    kind NOT IN ('flight', 'unrecognized', 'unheard'),
    CASE WHEN kind IN ('flight', 'unrecognized') THEN 'PENDING' WHEN kind = 'unheard' THEN ''
         WHEN kind IN ('data_exc', 'prod_exc', 'canceled', 'conflict') THEN 'FAILED'
         ELSE 'SUCCESSFUL' END,
    CASE WHEN kind = 'unrecognized' THEN 'CARD_PROD_QUALITY_HOLD' ELSE '' END,
    kind = 'conflict', false,
    CASE WHEN kind <> 'unheard' THEN first_seen END,
    CASE WHEN kind NOT IN ('flight', 'unrecognized', 'unheard') THEN last_event END,
    CASE WHEN kind <> 'unheard' THEN due END, NULL,
    CASE WHEN kind <> 'unheard' THEN late END,
    CASE WHEN kind <> 'unheard' THEN site ELSE '' END,
    CASE WHEN shipment_status IS NOT NULL THEN carrier_name ELSE '' END,
    CASE WHEN shipment_status IS NOT NULL THEN tracking ELSE '' END,
    coalesce(shipment_status, ''),
    CASE WHEN shipment_status IS NOT NULL THEN 'Parcel ' || lower(shipment_status) ELSE '' END,
    CASE WHEN shipment_status IS NOT NULL
         THEN 'https://www.laposte.fr/outils/suivre-vos-envois?code=' || tracking ELSE '' END,
    CASE WHEN shipment_status IS NOT NULL THEN jsonb_build_object(
        'carrier', carrier_name, 'trackingNumber', tracking, 'status', shipment_status,
        'message', 'Parcel ' || lower(shipment_status),
        'trackingUrl', 'https://www.laposte.fr/outils/suivre-vos-envois?code=' || tracking) END,
    CASE WHEN shipment_status IS NOT NULL THEN last_event END,
    CASE kind WHEN 'data_exc' THEN 'DATA_VALIDATION_FAILED' WHEN 'conflict'
        THEN 'DATA_VALIDATION_FAILED' WHEN 'prod_exc' THEN 'CHIP_PERSO_FAILED' ELSE '' END,
    CASE kind WHEN 'data_exc' THEN 'Embossing name longer than 26 characters'
        WHEN 'conflict' THEN 'Embossing name longer than 26 characters'
        WHEN 'prod_exc' THEN 'Chip personalization failed' ELSE '' END,
    CASE WHEN kind = 'canceled' THEN 'Cancelled by the issuer' ELSE '' END,
    'IRQ-' || lpad(n::text, 10, '0'),
    CASE WHEN kind = 'unheard' THEN '' ELSE 'CI_BATCH_' || lpad((n / 500)::text, 6, '0')
                                             || '.json' END,
    'CUST-' || lpad(((n + 1) / 2)::text, 9, '0'), '', '',
    first_seen, last_event, NULL, last_event,
    (pg_temp.bench_u(n, 'duplicates') < 0.1)::int,
    attention, muted, silent
FROM bench_gen
"""

_EVENTS = """
INSERT INTO tracker_timelineevent (
    content_hash, source, verdict, received_at, operation_id, status, operation_status,
    shipment_status, start_time, end_time, raw, note, inbox_id, order_id, user_id
)
SELECT
    md5(n::text || '-' || seq) || md5(seq || '-' || n::text),
    'notification',
    CASE WHEN status = 'CARD_PROD_QUALITY_HOLD' THEN 'unrecognized'
         WHEN kind = 'conflict' AND seq = 3 THEN 'conflict' ELSE 'applied' END,
    received,
    op_id, status, event_status, coalesce(ship, ''), first_seen,
    CASE WHEN event_status <> 'PENDING' THEN received END,
    jsonb_build_object(
        'operationId', op_id, 'operation', 'PRODUCE', 'status', event_status,
        'startTime', first_seen, 'cardId', card,
        'issuerRequestId', 'IRQ-' || lpad(n::text, 10, '0'),
        'details', jsonb_strip_nulls(jsonb_build_object(
            'status', status, 'dueDate', due, 'productionSite', site,
            'inputFileName', 'CI_BATCH_' || lpad((n / 500)::text, 6, '0') || '.json',
            'shipment', CASE WHEN ship IS NOT NULL THEN jsonb_build_object(
                'carrier', carrier_name, 'trackingNumber', tracking, 'status', ship,
                'message', 'Parcel ' || lower(ship),
                'trackingUrl', 'https://www.laposte.fr/outils/suivre-vos-envois?code=' || tracking)
            END,
            'errorCode', CASE WHEN status IN ('DATA_EXCEPTION', 'CARD_PROD_EXCEPTION')
                              THEN 'DATA_VALIDATION_FAILED' END))),
    '', NULL, n, NULL
FROM (
    SELECT g.*, e.status, e.ship, e.seq, cardinality(arr.statuses) AS k,
        CASE WHEN cardinality(arr.statuses) = 1 THEN g.last_event
             ELSE g.first_seen + (g.last_event - g.first_seen)
                  * ((e.seq - 1)::float8 / (cardinality(arr.statuses) - 1)) END AS received,
        CASE WHEN e.seq < cardinality(arr.statuses) THEN 'PENDING'
             WHEN g.kind IN ('data_exc', 'prod_exc', 'canceled', 'conflict') THEN 'FAILED'
             WHEN g.kind IN ('flight', 'unrecognized') THEN 'PENDING'
             ELSE 'SUCCESSFUL' END AS event_status
    FROM bench_gen AS g
    CROSS JOIN LATERAL (
        SELECT CASE g.kind
            WHEN 'flight' THEN (ARRAY['CARD_PROD_REQUESTED', 'DATA_PREPARED', 'CARD_PROD_READY',
                                      'CARD_PROD_ONGOING', 'CARD_PROD_DONE'])[1:g.step + 1]
            WHEN 'unrecognized' THEN ARRAY['CARD_PROD_REQUESTED', 'DATA_PREPARED',
                'CARD_PROD_READY', 'CARD_PROD_ONGOING', 'CARD_PROD_QUALITY_HOLD']
            WHEN 'returned' THEN ARRAY['CARD_PROD_REQUESTED', 'CARD_PROD_DONE', 'CARD_SHIPPED',
                'CARD_SHIPPED', 'CARD_RETURNED']
            WHEN 'data_exc' THEN ARRAY['CARD_PROD_REQUESTED', 'DATA_EXCEPTION']
            WHEN 'prod_exc' THEN ARRAY['CARD_PROD_REQUESTED', 'CARD_PROD_READY',
                'CARD_PROD_EXCEPTION']
            WHEN 'canceled' THEN ARRAY['CARD_PROD_REQUESTED', 'CARD_PROD_CANCELED']
            WHEN 'conflict' THEN ARRAY['CARD_PROD_REQUESTED', 'DATA_EXCEPTION', 'CARD_SHIPPED']
            WHEN 'unheard' THEN ARRAY[]::text[]
            ELSE ARRAY['CARD_PROD_REQUESTED', 'CARD_PROD_DONE', 'CARD_SHIPPED', 'CARD_SHIPPED']
        END AS statuses,
        CASE g.kind
            WHEN 'returned' THEN ARRAY[NULL, NULL, 'InTransit', 'ReturnToSender', 'Returned']
            WHEN 'transit' THEN ARRAY[NULL, NULL, 'InfoReceived', 'InTransit']
            WHEN 'problem' THEN ARRAY[NULL, NULL, 'InTransit', 'Exception']
            WHEN 'delivered' THEN ARRAY[NULL, NULL, 'InfoReceived', 'Delivered']
            ELSE ARRAY[]::text[]
        END AS ships
    ) AS arr
    CROSS JOIN LATERAL unnest(arr.statuses, arr.ships) WITH ORDINALITY AS e(status, ship, seq)
    WHERE e.status IS NOT NULL
) AS events
"""

MARKER = """
CREATE TABLE IF NOT EXISTS bench_dataset (
    name text PRIMARY KEY, orders bigint NOT NULL, version int NOT NULL,
    generated_at timestamptz NOT NULL, seconds float8 NOT NULL
)
"""


@dataclass(frozen=True)
class Dataset:
    """What a bench database holds, and whether this run made it or found it."""

    orders: int
    events: int
    needing_attention: int
    generated_at: datetime
    seconds: float
    reused: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "events": self.events,
            "needing_attention": self.needing_attention,
            "attention_share": round(self.needing_attention / max(self.orders, 1), 4),
            "generated_at": self.generated_at.isoformat(),
            "generation_seconds": round(self.seconds, 1),
            "reused": self.reused,
        }


def ensure(url: str, orders: int, *, max_age_hours: float = 12.0, fresh: bool = False) -> Dataset:
    """The dataset of `orders` orders in this (migrated) database: reused when the same size,
    generator version and younger than `max_age_hours` (the clock moves orders into the queue),
    generated again otherwise."""
    with db.connect(url) as conn:
        conn.execute(MARKER)
        row = conn.execute(
            "SELECT orders, version, generated_at, seconds,"
            " extract(epoch FROM now() - generated_at) / 3600 FROM bench_dataset"
            " WHERE name = 'orders'"
        ).fetchone()
        if (
            not fresh
            and row is not None
            and row[0] == orders
            and row[1] == GENERATOR_VERSION
            and row[4] < max_age_hours
            and _count(conn, "tracker_cardorder") >= orders
        ):
            return _described(conn, row[2], row[3], reused=True)
        started = time.monotonic()
        generated_at = generate(conn, orders)
        seconds = time.monotonic() - started
        conn.execute(
            "INSERT INTO bench_dataset VALUES ('orders', %s, %s, %s, %s) ON CONFLICT (name) DO"
            " UPDATE SET orders = EXCLUDED.orders, version = EXCLUDED.version,"
            " generated_at = EXCLUDED.generated_at, seconds = EXCLUDED.seconds",
            [orders, GENERATOR_VERSION, generated_at, seconds],
        )
        return _described(conn, generated_at, seconds, reused=False)


def generate(conn: psycopg.Connection, orders: int) -> datetime:
    """Empty the tables the generator owns and write `orders` orders with their timelines."""
    with conn.transaction():
        generated_at = conn.execute("SELECT now()").fetchone()[0]
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        conn.execute("SET LOCAL synchronous_commit = off")
        # These statements are long CASE trees: compiling them costs minutes, running them
        # seconds.
        conn.execute("SET LOCAL jit = off")
        # Consistent by construction: skip the per-row foreign key triggers during the load.
        conn.execute("SET LOCAL session_replication_role = replica")
        # CASCADE: whatever else refers to the orders (sweep claims, …) goes with them.
        conn.execute(f"TRUNCATE {', '.join(_TRUNCATED)} RESTART IDENTITY CASCADE")
        indexes = _droppable_indexes(conn)
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute(_FUNCTIONS)
        params = {
            "now": generated_at,
            "sites": _array(SITES),
            "carriers": _array(CARRIERS),
            "issuer_1": ISSUERS[0],
            "issuer_2": ISSUERS[1],
        }
        # Bound on the client: PostgreSQL takes no parameters in CREATE TABLE … AS.
        cursor = psycopg.ClientCursor(conn)
        for first in range(1, orders + 1, _CHUNK):
            last = min(orders, first + _CHUNK - 1)
            cursor.execute(_literal_arrays(_BASE, params), {**params, "first": first, "last": last})
            cursor.execute(_ORDERS)
            cursor.execute(_EVENTS)
            cursor.execute("DROP TABLE bench_gen")
        for _, definition in indexes:
            conn.execute(definition)
        for table in _LOADED:
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
    for table in _LOADED:
        conn.execute(f"VACUUM (ANALYZE) {table}")
    return generated_at


def _droppable_indexes(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """The loaded tables' indexes that back no constraint (dropped, then rebuilt from their
    definition, which is faster than maintaining them row by row)."""
    return conn.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes AS i"
        " WHERE i.schemaname = 'public' AND i.tablename = ANY(%s)"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)"
        " ORDER BY i.indexname",
        [list(_LOADED)],
    ).fetchall()


def _array(values: tuple[str, ...]) -> str:
    return "[" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + "]"


def _literal_arrays(query: str, params: dict[str, Any]) -> str:
    # ARRAY%(x)s needs the literal in the text; the values are this module's own constants.
    for name in ("sites", "carriers"):
        query = query.replace(f"ARRAY%({name})s", "ARRAY" + params[name])
    return query


def _count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _described(
    conn: psycopg.Connection, generated_at: datetime, seconds: float, *, reused: bool
) -> Dataset:
    return Dataset(
        orders=_count(conn, "tracker_cardorder"),
        events=_count(conn, "tracker_timelineevent"),
        needing_attention=needing_attention(conn),
        generated_at=generated_at,
        seconds=seconds,
        reused=reused,
    )


def needing_attention(conn: psycopg.Connection) -> int:
    """Orders in the queue's default view now (tracker/attention.py, needs_attention)."""
    return conn.execute(
        "SELECT count(*) FROM tracker_cardorder WHERE attention_since <= now()"
        " AND (muted_until IS NULL OR muted_until <= now())"
    ).fetchone()[0]


def stage_counts(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT stage, count(*) FROM tracker_cardorder GROUP BY stage ORDER BY 2 DESC"
    ).fetchall()
    return {stage or "(none)": count for stage, count in rows}


def ensure_users(url: str) -> None:
    """The bench's agent and supervisor, with PASSWORD, in their groups (made by `migrate`)."""
    from django.contrib.auth.hashers import make_password

    password = make_password(PASSWORD)
    with db.connect(url) as conn:
        for username, group in USERS.items():
            user_id = conn.execute(
                "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name,"
                " email, is_staff, is_active, date_joined)"
                " VALUES (%s, false, %s, '', '', '', false, true, now())"
                " ON CONFLICT (username) DO UPDATE SET password = EXCLUDED.password RETURNING id",
                [password, username],
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO auth_user_groups (user_id, group_id)"
                " SELECT %s, id FROM auth_group WHERE name = %s ON CONFLICT DO NOTHING",
                [user_id, group],
            )


def prepare(ctx: Context, url: str, orders: int) -> Dataset:
    """Create and migrate the database, make sure it holds `orders` orders and the bench users;
    once per run and database."""
    if url not in ctx.datasets:
        created = db.ensure_database(url)
        if created:
            ctx.log(f"created database {db.name_of(url)}")
        db.claim(url, created)
        db.migrate(ctx.python, str(ctx.base_dir), ctx.env(url, "http://127.0.0.1:9"))
        ctx.log(f"{db.name_of(url)}: preparing {orders:,} orders (reused when already there)")
        dataset = ensure(url, orders, fresh=ctx.fresh_data)
        verb = "found" if dataset.reused else f"generated in {dataset.seconds:.0f} s:"
        ctx.log(
            f"{db.name_of(url)}: {verb} {dataset.orders:,} orders, {dataset.events:,} events,"
            f" {dataset.needing_attention:,} needing attention"
        )
        ensure_users(url)
        ctx.datasets[url] = dataset
    return ctx.datasets[url]
