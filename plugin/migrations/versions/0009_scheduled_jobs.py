"""scheduled_jobs: the schedule's jobs, claimed across instances; sync_runs: status stopped (a stop asked for by a signal)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:00:00

"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _keeping_rejection_links(alter):
    """Run ``alter`` (a batch copy of sync_runs on SQLite) without losing rejected_records.sync_run_id (see 0008)."""
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        op.execute('CREATE TEMP TABLE _rejection_runs AS SELECT id, sync_run_id FROM rejected_records WHERE sync_run_id IS NOT NULL')
    alter()
    if sqlite:
        op.execute('UPDATE rejected_records SET sync_run_id = (SELECT r.sync_run_id FROM _rejection_runs r WHERE r.id = rejected_records.id) '
                   'WHERE id IN (SELECT id FROM _rejection_runs)')
        op.execute('DROP TABLE _rejection_runs')


def _sync_statuses(statuses):
    def alter():
        with op.batch_alter_table('sync_runs', schema=None) as batch_op:
            batch_op.drop_constraint('sync_status', type_='check')
            batch_op.create_check_constraint('sync_status', 'status IN (' + ', '.join(f"'{s}'" for s in statuses) + ')')

    _keeping_rejection_links(alter)


def upgrade():
    op.create_table('scheduled_jobs',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('next_due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=True),
    sa.Column('last_started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_outcome', sa.Enum('succeeded', 'failed', 'skipped', 'stopped', name='job_outcome', native_enum=False,
                                      create_constraint=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_summary', sa.Text(), nullable=True),
    sa.Column('memory', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scheduled_jobs'))
    )
    _sync_statuses(('running', 'succeeded', 'failed', 'abandoned', 'stopped'))


def downgrade():
    # a stopped run ended before the end, as an abandoned one did; the older schema has that word
    op.execute("UPDATE sync_runs SET status = 'abandoned' WHERE status = 'stopped'")
    _sync_statuses(('running', 'succeeded', 'failed', 'abandoned'))
    op.drop_table('scheduled_jobs')
