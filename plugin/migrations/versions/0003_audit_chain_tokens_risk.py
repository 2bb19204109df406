"""audit_log hash chain; api_tokens and their hourly use; risk_acceptances

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:00:00

"""
import hashlib
import json
import math
from datetime import timezone
from decimal import Decimal

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

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
    _backfill_chain()
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(_APPEND_ONLY_FUNCTION)
        op.execute('CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log '
                   'FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()')

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
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log')
        op.execute('DROP FUNCTION IF EXISTS audit_log_append_only()')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_constraint('uq_audit_log_seq', type_='unique')
        batch_op.drop_column('row_hash')
        batch_op.drop_column('prev_hash')
        batch_op.drop_column('seq')


# Refuses every UPDATE and DELETE of an audit row, whoever runs it (the table's owner can still
# disable the trigger; a role that must not, should not own the table). TRUNCATE is not a row
# operation and is not refused: removing the whole log shows against a head kept elsewhere.
_APPEND_ONLY_FUNCTION = """
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % of audit row % refused', TG_OP, OLD.id
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""

# --- the chain over rows stored before this revision, in id order ---------------------------
#
# A copy of the hash rule of plugin.services.audit.chain_hash as it is at this revision: a
# migration must give the same result whatever the application code becomes later.

_GENESIS = '0' * 64
_HASH_PREFIX = b'gapbridge-audit-chain-1\n'
_BATCH = 5000


def _chain_hash(seq, at, actor, action, subject_type, subject_id, details, prev_hash):
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc).replace(tzinfo=None)
    body = json.dumps([seq, at.isoformat(timespec='microseconds') + 'Z', actor, action, subject_type, subject_id,
                       _canonical(details), prev_hash], ensure_ascii=False, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(_HASH_PREFIX + body.encode('utf-8')).hexdigest()


def _canonical(value):
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return int(Decimal(repr(value))) if value.is_integer() else value
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _backfill_chain():
    """seq, prev_hash and row_hash for every stored row, in id order, a batch at a time."""
    audit = sa.table(
        'audit_log', sa.column('id', sa.Integer), sa.column('at', sa.DateTime(timezone=True)), sa.column('actor', sa.String),
        sa.column('action', sa.String), sa.column('subject_type', sa.String), sa.column('subject_id', sa.String),
        sa.column('details', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')), sa.column('seq', sa.BigInteger),
        sa.column('prev_hash', sa.String), sa.column('row_hash', sa.String))
    c = audit.c
    bind = op.get_bind()
    update = audit.update().where(c.id == sa.bindparam('row_id')).values(
        seq=sa.bindparam('new_seq'), prev_hash=sa.bindparam('new_prev'), row_hash=sa.bindparam('new_hash'))
    seq, prev, last_id = 0, _GENESIS, None
    while True:
        query = sa.select(c.id, c.at, c.actor, c.action, c.subject_type, c.subject_id, c.details).order_by(c.id).limit(_BATCH)
        rows = bind.execute(query if last_id is None else query.where(c.id > last_id)).all()
        if not rows:
            return
        params = []
        for r in rows:
            seq += 1
            h = _chain_hash(seq, r.at, r.actor, r.action, r.subject_type, r.subject_id, r.details, prev)
            params.append({'row_id': r.id, 'new_seq': seq, 'new_prev': prev, 'new_hash': h})
            prev = h
        bind.execute(update, params)
        last_id = rows[-1].id
