"""memory tool set

Agents choose the built-in tools that edit their core memory: "classic" (core_memory_append and
core_memory_replace, what every agent had before) or "lines" (memory_insert, memory_replace,
memory_rethink, memory_finish_edits).

Revision ID: 1747d9474109
Revises: 1de8626ef3d5
Create Date: 2026-12-04 18:34:02.414277
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1747d9474109'
down_revision: str | None = '1de8626ef3d5'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('memory_tool_set', sa.String(length=16), server_default='classic', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('memory_tool_set')

