"""the dashboard's counts from narrow indexes: heatmap cell masks, text flags for the KPIs, covering indexes (PostgreSQL)

Every dashboard number was a scan of the incidents heap, whose rows are about 2 KB: the raw record stays inline,
since PostgreSQL moves values out of a row only once the row passes about 2 KB (TOAST_TUPLE_THRESHOLD), whatever
toast_tuple_target says (it only sets how far such a row is then shrunk).

- incidents.cell_outcomes: each incident's outcome under each heatmap cell that no control or sub-process mask holds
  (coverage.cell_groups); filled here from the findings when the mappings can be loaded, else the next assessment
  writes them (a NULL mask makes an incident stale).
- incidents.has_root_cause, has_lessons_learned, has_timeline: what the KPIs ask of the long text columns, generated
  by the database (stored on PostgreSQL, computed on read on SQLite), so that an index can hold them.
- PostgreSQL: ix_incidents_scope (by id, with every scope column and the masks), ix_incidents_security (the security
  incidents, with what the KPIs read) and ix_findings_gaps (the gaps that fail or ever failed), then VACUUM ANALYZE:
  an index-only scan needs the visibility map, which the rewrite for the generated columns cleared.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 18:00:00

"""
import logging

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

log = logging.getLogger('gapbridge')

# as in plugin.models (HAS_TEXT, HAS_ITEMS, SCOPE_COLUMNS, SECURITY_COLUMNS, GAPS_INDEXED), frozen here
GENERATED = {
    'has_root_cause': "length(trim(coalesce(root_cause, ''))) > 0",
    'has_lessons_learned': "length(trim(coalesce(lessons_learned, ''))) > 0",
    'has_timeline': "coalesce(CAST(timeline AS TEXT), '[]') NOT IN ('[]', 'null')",
}
SCOPE_COLUMNS = ['assessed_ruleset', 'opened_at', 'closed_at', 'business_unit', 'source', 'severity', 'record_type', 'is_security',
                 'category', 'first_seen_at', 'control_outcomes', 'subprocess_outcomes', 'cell_outcomes']
SECURITY_COLUMNS = ['assessed_ruleset', 'closed_at', 'business_unit', 'source', 'severity', 'record_type', 'state', 'assessed_at',
                    'contained_at', 'resolved_at', 'reported_via', 'problem_ref', 'has_root_cause', 'has_lessons_learned',
                    'has_timeline']
GAPS_INDEXED = "kind = 'gap' AND (status = 'fail' OR first_failed_at IS NOT NULL)"


def _postgresql():
    return op.get_bind().dialect.name == 'postgresql'


def _fill_cell_outcomes():
    """The cell masks of the incidents assessed under the mappings the app has loaded, from their findings."""
    try:
        from flask import current_app

        from plugin.queries.coverage import stored_masks
        from plugin.state import gapbridge

        ruleset = gapbridge(current_app).ruleset
    except Exception as exc:  # no app or no loadable mappings: the assessment fills them (the incidents are stale)
        log.warning('incidents.cell_outcomes left for the next assessment: %s', exc)
        return
    from plugin.models import Incident

    mask = stored_masks(ruleset)['cell_outcomes']
    op.get_bind().execute(sa.update(Incident.__table__).where(Incident.__table__.c.assessed_ruleset == ruleset.hash)
                          .values(cell_outcomes=sa.literal(0, sa.BigInteger) if mask is None else mask))


def upgrade():
    op.add_column('incidents', sa.Column('cell_outcomes', sa.BigInteger(), nullable=True))
    _fill_cell_outcomes()
    if _postgresql():  # one rewrite of the table for the three
        op.execute('ALTER TABLE incidents ' + ', '.join(f'ADD COLUMN {name} boolean GENERATED ALWAYS AS ({expr}) STORED'
                                                        for name, expr in GENERATED.items()))
        op.create_index('ix_incidents_scope', 'incidents', ['id'], postgresql_include=SCOPE_COLUMNS)
        op.create_index('ix_incidents_security', 'incidents', ['affected_ci', 'category', 'opened_at'], postgresql_include=SECURITY_COLUMNS,
                        postgresql_where=sa.text('is_security IS TRUE'))
        op.create_index('ix_findings_gaps', 'findings', ['incident_id'],
                        postgresql_include=['check_id', 'status', 'first_failed_at', 'resolved_at'],
                        postgresql_where=sa.text(GAPS_INDEXED))
        with op.get_context().autocommit_block():
            op.execute('VACUUM ANALYZE incidents')
            op.execute('VACUUM ANALYZE findings')
    else:  # SQLite adds a generated column only as VIRTUAL (computed when read)
        for name, expr in GENERATED.items():
            op.add_column('incidents', sa.Column(name, sa.Boolean(), sa.Computed(expr)))


def downgrade():
    if _postgresql():
        op.drop_index('ix_findings_gaps', table_name='findings')
        op.drop_index('ix_incidents_security', table_name='incidents')
        op.drop_index('ix_incidents_scope', table_name='incidents')
    for name in reversed(GENERATED):
        op.drop_column('incidents', name)
    op.drop_column('incidents', 'cell_outcomes')
