"""dashboard_users: people who sign in to the dashboard (argon2id hashes, lock-out, session generation)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 07:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('dashboard_users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('role', sa.Enum('auditor', 'isms_manager', 'admin', name='dashboard_user_role', native_enum=False,
                              create_constraint=True), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=128), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed_attempts', sa.Integer(), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_sign_in_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('password_changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('session_generation', sa.Integer(), nullable=False),
    # names are stored lowercased, so the unique constraint below holds without regard to case
    sa.CheckConstraint('username = lower(username)', name=op.f('ck_dashboard_users_username_lowercase')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_users')),
    sa.UniqueConstraint('username', name=op.f('uq_dashboard_users_username'))
    )


def downgrade():
    op.drop_table('dashboard_users')
