"""findings: resolved_at, when a failed gap came to pass

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:30:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    # plain ADD COLUMN: a batch copy of findings is not needed for a nullable column
    op.add_column('findings', sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    op.drop_column('findings', 'resolved_at')
