"""block versions

Every change of a block's value is kept as a version (block_versions: editor, run, value before and
after, place on the undo stack); blocks get the number of their latest version. Blocks written before
this revision start at version 0 with no versions kept.

Revision ID: 82e1449aaead
Revises: 1e2d1aebde18
Create Date: 2026-12-04 18:28:56.124060
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '82e1449aaead'
down_revision: str | None = '1e2d1aebde18'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('block_versions',
    sa.Column('block_id', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('operation', sa.String(length=16), nullable=False),
    sa.Column('actor_type', sa.String(length=16), nullable=False),
    sa.Column('actor_id', sa.String(length=128), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('before', sa.Text(), nullable=False),
    sa.Column('after', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('target_version', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('block_id', 'version', name=op.f('pk_block_versions'))
    )
    with op.batch_alter_table('block_versions', schema=None) as batch_op:
        batch_op.create_index('ix_block_versions_created', ['created_at'], unique=False)
        batch_op.create_index('ix_block_versions_org_block', ['org_id', 'block_id', 'version'], unique=False)

    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.drop_column('version')

    with op.batch_alter_table('block_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_block_versions_org_block')
        batch_op.drop_index('ix_block_versions_created')

    op.drop_table('block_versions')
