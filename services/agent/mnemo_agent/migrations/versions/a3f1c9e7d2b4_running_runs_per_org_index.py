"""running runs per organization index

Revision ID: a3f1c9e7d2b4
Revises: 5b7e2c4a9d10
Create Date: 2026-12-05 09:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'a3f1c9e7d2b4'
down_revision: str | None = '5b7e2c4a9d10'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index(
            'ix_runs_running_org',
            ['org_id', 'lease_expires_at'],
            unique=False,
            sqlite_where=sa.text("status = 'running'"),
            postgresql_where=sa.text("status = 'running'"),
        )


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_running_org')
