"""outbox_backoff: the wait a tool asked for (Retry-After), per connector instance, honoured by every drain

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('outbox_backoff',
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('asked_seconds', sa.Float(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('set_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('source', name=op.f('pk_outbox_backoff'))
    )


def downgrade():
    op.drop_table('outbox_backoff')
