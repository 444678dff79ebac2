"""Keep recorded values as written: inputs, outputs, payloads and events as ``json``.

``jsonb`` rewrites the text it is given: it puts an object's keys in its own order
(shorter keys first), writes ``1e16`` as ``10000000000000000`` (which Python reads back
as an int) and ``-0.0`` as ``0.0``. A step's result was decoded live from the text
Python wrote and on replay from the text Postgres gave back, so a workflow that
iterated a dict a step returned saw one order live and another after a restart: the
steps it called per key were matched to the wrong keys on replay, and a side effect
ran twice while another never ran. Signal payloads and event values came back with
their floats turned into ints. ``json`` stores the text byte for byte, so a value
decodes the same live, on replay and in every client. Errors, configs and other
internal records stay ``jsonb``.

Revision ID: 0013_exact_values
Revises: 0012_schedule_next_tick
Create Date: 2026-12-07
Deploy: apply before deploying the code that needs it (its workers refuse an older
schema). Older code still running meanwhile keeps working, except one statement: a
start that repeats an idempotency key a run already has compares the inputs with a
jsonb operator, which a json column refuses, so that start fails with a DatabaseError
until the older code is replaced. Changing a column's type rewrites ``runs``, ``steps``,
``signals`` and ``events`` under an exclusive lock: on a large database, apply it in a
quiet window (``durableflow db sql`` shows the statements).
"""

from alembic import op

revision = "0013_exact_values"
down_revision = "0012_schedule_next_tick"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("runs", "input"),
    ("runs", "output"),
    ("steps", "output"),
    ("signals", "payload"),
    ("events", "value"),
)
_TABLES = ("runs", "steps", "signals", "events")


def upgrade() -> None:
    _retype("json")


def downgrade() -> None:
    _retype("jsonb")


def _retype(kind: str) -> None:
    """Every column of ``_COLUMNS`` to ``kind``, one ALTER TABLE (one rewrite) per table."""
    schema = op.get_context().config.attributes["schema"]
    for table in _TABLES:
        changes = ", ".join(
            f"ALTER COLUMN {column} TYPE {kind} USING {column}::{kind}"
            for owner, column in _COLUMNS
            if owner == table
        )
        op.execute(f'ALTER TABLE "{schema}".{table} {changes}')
