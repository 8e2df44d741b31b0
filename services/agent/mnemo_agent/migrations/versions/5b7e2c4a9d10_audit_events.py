"""audit events

Revision ID: 5b7e2c4a9d10
Revises: 03aba73d400f
Create Date: 2026-12-05 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '5b7e2c4a9d10'
down_revision: str | None = '03aba73d400f'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('user_id', sa.String(length=128), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=300), nullable=False),
    sa.Column('resource', sa.String(length=1000), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=False),
    sa.Column('outcome', sa.String(length=128), nullable=False),
    sa.Column('code', sa.Integer(), nullable=False),
    sa.Column('surface', sa.String(length=8), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_org_time', ['org_id', 'time', 'id'], unique=False)
        batch_op.create_index('ix_audit_events_time', ['time'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_time')
        batch_op.drop_index('ix_audit_events_org_time')
    op.drop_table('audit_events')
