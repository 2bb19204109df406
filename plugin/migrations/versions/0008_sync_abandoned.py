"""sync_runs: status abandoned (a run killed before it finished), who ran it, when and by whom it was abandoned

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 06:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def _keeping_rejection_links(alter):
    """Run ``alter`` (a batch copy of sync_runs on SQLite) without losing rejected_records.sync_run_id.

    The copy drops the old sync_runs, and with foreign keys on, the drop deletes its rows first:
    ON DELETE SET NULL would unlink every rejection from its run.
    """
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        op.execute('CREATE TEMP TABLE _rejection_runs AS SELECT id, sync_run_id FROM rejected_records WHERE sync_run_id IS NOT NULL')
    alter()
    if sqlite:
        op.execute('UPDATE rejected_records SET sync_run_id = (SELECT r.sync_run_id FROM _rejection_runs r WHERE r.id = rejected_records.id) '
                   'WHERE id IN (SELECT id FROM _rejection_runs)')
        op.execute('DROP TABLE _rejection_runs')


def upgrade():
    def alter():
        with op.batch_alter_table('sync_runs', schema=None) as batch_op:
            batch_op.drop_constraint('sync_status', type_='check')
            batch_op.create_check_constraint('sync_status', "status IN ('running', 'succeeded', 'failed', 'abandoned')")
            batch_op.add_column(sa.Column('holder', sa.String(length=128), nullable=True))
            batch_op.add_column(sa.Column('abandoned_at', sa.DateTime(timezone=True), nullable=True))
            batch_op.add_column(sa.Column('abandoned_by', sa.String(length=128), nullable=True))

    _keeping_rejection_links(alter)


def downgrade():
    # an abandoned run did not succeed; the older schema has no other word for it
    op.execute("UPDATE sync_runs SET status = 'failed', error = coalesce(error, 'abandoned') WHERE status = 'abandoned'")

    def alter():
        with op.batch_alter_table('sync_runs', schema=None) as batch_op:
            batch_op.drop_column('abandoned_by')
            batch_op.drop_column('abandoned_at')
            batch_op.drop_column('holder')
            batch_op.drop_constraint('sync_status', type_='check')
            batch_op.create_check_constraint('sync_status', "status IN ('running', 'succeeded', 'failed')")

    _keeping_rejection_links(alter)
