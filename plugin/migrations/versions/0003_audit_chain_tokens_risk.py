"""audit_log hash chain; api_tokens and their hourly use; risk_acceptances

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:00:00

"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seq', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('row_hash', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_audit_log_seq', ['seq'])

    op.create_table(
        'api_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('role', sa.Enum('auditor', 'isms_manager', 'admin', name='token_role', native_enum=False, create_constraint=True), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_by', sa.String(length=128), nullable=True),
        sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_api_tokens'),
        sa.UniqueConstraint('name', name='uq_api_tokens_name'),
        sa.UniqueConstraint('token_hash', name='uq_api_tokens_token_hash'),
    )
    op.create_table(
        'api_token_use',
        sa.Column('token_id', sa.Integer(), nullable=False),
        sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
        sa.Column('requests', sa.Integer(), nullable=False),
        sa.Column('denied', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], name='fk_api_token_use_token_id_api_tokens', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('token_id', 'hour', name='pk_api_token_use'),
    )
    op.create_table(
        'risk_acceptances',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('check_id', sa.String(length=64), nullable=False),
        sa.Column('incident_id', sa.Integer(), nullable=True),
        sa.Column('scope_source', sa.String(length=64), nullable=True),
        sa.Column('scope_business_unit', sa.String(length=255), nullable=True),
        sa.Column('scope_category', sa.String(length=128), nullable=True),
        sa.Column('justification', sa.Text(), nullable=False),
        sa.Column('approver', sa.String(length=255), nullable=False),
        sa.Column('created_by', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_by', sa.String(length=128), nullable=True),
        sa.Column('revoke_reason', sa.Text(), nullable=True),
        sa.Column('expiry_recorded_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name='fk_risk_acceptances_incident_id_incidents'),
        sa.PrimaryKeyConstraint('id', name='pk_risk_acceptances'),
    )
    op.create_index('ix_risk_acceptances_check', 'risk_acceptances', ['check_id', 'expires_at'], unique=False)
    op.create_index('ix_risk_acceptances_incident_id', 'risk_acceptances', ['incident_id'], unique=False)


def downgrade():
    op.drop_index('ix_risk_acceptances_incident_id', table_name='risk_acceptances')
    op.drop_index('ix_risk_acceptances_check', table_name='risk_acceptances')
    op.drop_table('risk_acceptances')
    op.drop_table('api_token_use')
    op.drop_table('api_tokens')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_constraint('uq_audit_log_seq', type_='unique')
        batch_op.drop_column('row_hash')
        batch_op.drop_column('prev_hash')
        batch_op.drop_column('seq')
