"""incidents: control_outcomes and subprocess_outcomes, each incident's outcome per control and sub-process

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:10:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    # left empty: the layout of the bits depends on the loaded mappings, which a migration does not know; an incident
    # without them is stale (re-assessed by the next sync or `gapbridge assess`), and coverage reads its findings meanwhile
    op.add_column('incidents', sa.Column('control_outcomes', sa.BigInteger(), nullable=True))
    op.add_column('incidents', sa.Column('subprocess_outcomes', sa.BigInteger(), nullable=True))


def downgrade():
    op.drop_column('incidents', 'subprocess_outcomes')
    op.drop_column('incidents', 'control_outcomes')
