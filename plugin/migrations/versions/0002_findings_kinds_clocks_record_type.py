"""findings: kind (gap or improvement), pending outcome and due time; incidents: record_type, vulnerability_refs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 22:40:00

"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade():
    # plain ADD COLUMN, never a batch copy of incidents: on SQLite, dropping the old table
    # would cascade-delete every finding and outbox item that refers to it
    op.add_column('incidents', sa.Column('record_type', sa.String(length=16), nullable=True))
    op.add_column('incidents', sa.Column('vulnerability_refs', JSON, nullable=False, server_default=sa.text("'[]'")))
    # what the shipped connector defaults would have said; the next sync maps it from configuration
    op.execute("UPDATE incidents SET record_type = CASE WHEN lower(category) IN ('vulnerability', 'weakness') "
               "OR lower(subcategory) IN ('vulnerability', 'weakness') THEN 'weakness' ELSE 'incident' END")
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_constraint('finding_status', type_='check')
        batch_op.create_check_constraint('finding_status', "status IN ('pass', 'fail', 'pending', 'not_applicable')")
        batch_op.add_column(sa.Column('kind', sa.Enum('gap', 'improvement', name='finding_kind', native_enum=False,
                                                      create_constraint=True), nullable=False, server_default='gap'))
        batch_op.add_column(sa.Column('due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_findings_pending_due', ['status', 'due_at'], unique=False)
    op.execute("UPDATE findings SET kind = 'improvement' WHERE relation = 'improvement'")


def downgrade():
    op.execute("DELETE FROM findings WHERE status = 'pending'")
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_index('ix_findings_pending_due')
        batch_op.drop_column('due_at')
        batch_op.drop_constraint('finding_kind', type_='check')
        batch_op.drop_column('kind')
        batch_op.drop_constraint('finding_status', type_='check')
        batch_op.create_check_constraint('finding_status', "status IN ('pass', 'fail', 'not_applicable')")
    op.drop_column('incidents', 'vulnerability_refs')  # SQLite 3.35+ drops a column in place
    op.drop_column('incidents', 'record_type')
