"""indexes for periods and coverage; credentials scrubbed from links and error texts stored before they were refused

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# (table, key, column): where a URL with user:password@ or a token parameter could have been stored
_SCRUBBED = [("incidents", "id", "url"), ("sync_runs", "id", "error"), ("outbox", "id", "last_error"),
             ("rejected_records", "id", "reason")]


def upgrade():
    op.create_index('ix_incidents_opened_at', 'incidents', ['opened_at'], unique=False)
    op.create_index('ix_incidents_closed_at', 'incidents', ['closed_at'], unique=False)
    op.create_index('ix_findings_incident_outcome', 'findings', ['incident_id', 'kind', 'status', 'check_id'], unique=False)
    # the redaction rule is the connectors' own, used at runtime since 0003: one rule for old rows and new
    from connectors.redact import redact_urls

    conn = op.get_bind()
    for table, key, column in _SCRUBBED:
        rows = conn.execute(sa.text(f"SELECT {key}, {column} FROM {table} WHERE {column} LIKE '%@%' OR {column} LIKE '%=%'")).all()
        for row_id, text in rows:
            clean = redact_urls(text)
            if clean != text:
                conn.execute(sa.text(f"UPDATE {table} SET {column} = :clean WHERE {key} = :id"), {"clean": clean, "id": row_id})


def downgrade():
    # a scrubbed credential is not restored
    op.drop_index('ix_findings_incident_outcome', table_name='findings')
    op.drop_index('ix_incidents_closed_at', table_name='incidents')
    op.drop_index('ix_incidents_opened_at', table_name='incidents')
