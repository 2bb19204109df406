"""cheaper writes of incidents and findings: fewer and smaller findings indexes; on PostgreSQL the raw record as json

A sync writes an incident row and a finding per check; on PostgreSQL the server's time went to
maintaining five findings indexes and to parsing every raw record into jsonb.

- PostgreSQL: the unique (incident_id, check_id) carries kind and status (INCLUDE), so coverage
  still reads an incident's outcomes from an index alone, and ix_findings_incident_outcome, which
  repeated its key, goes. SQLite has no INCLUDE: it keeps both.
- ix_findings_pending_due covers only pending findings (the running clocks, the few), keyed as the
  deadlines list pages them (due_at, incident_id, check_id).
- PostgreSQL: incidents.raw is json, not jsonb: the record exactly as the tool sent it, validated
  but not converted, and never queried inside.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 15:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def _postgresql():
    return op.get_bind().dialect.name == 'postgresql'


def upgrade():
    op.drop_index('ix_findings_pending_due', table_name='findings')
    op.create_index('ix_findings_pending_due', 'findings', ['due_at', 'incident_id', 'check_id'], unique=False,
                    sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
    if _postgresql():
        op.execute('ALTER TABLE findings DROP CONSTRAINT uq_findings_incident_check')
        op.execute('ALTER TABLE findings ADD CONSTRAINT uq_findings_incident_check UNIQUE (incident_id, check_id) INCLUDE (kind, status)')
        op.drop_index('ix_findings_incident_outcome', table_name='findings')
        op.execute('ALTER TABLE incidents ALTER COLUMN raw TYPE json USING raw::json')


def downgrade():
    if _postgresql():
        op.execute('ALTER TABLE incidents ALTER COLUMN raw TYPE jsonb USING raw::jsonb')
        op.create_index('ix_findings_incident_outcome', 'findings', ['incident_id', 'kind', 'status', 'check_id'], unique=False)
        op.execute('ALTER TABLE findings DROP CONSTRAINT uq_findings_incident_check')
        op.execute('ALTER TABLE findings ADD CONSTRAINT uq_findings_incident_check UNIQUE (incident_id, check_id)')
    op.drop_index('ix_findings_pending_due', table_name='findings')
    op.create_index('ix_findings_pending_due', 'findings', ['status', 'due_at'], unique=False)
