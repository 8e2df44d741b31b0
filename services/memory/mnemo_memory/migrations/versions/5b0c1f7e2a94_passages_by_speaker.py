"""passages by speaker: an index for contextual search's speakers of an agent and their passages

Contextual hybrid search reads the distinct speakers of an agent's passages and, when a query names one,
searches that speaker's passages (docs/adr/0203-contextual-hybrid-search.md). Without this index both
scan every passage of the agent.

Revision ID: 5b0c1f7e2a94
Revises: 82e1449aaead
Create Date: 2026-12-04 18:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '5b0c1f7e2a94'
down_revision: str | None = '82e1449aaead'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('passages', schema=None) as batch_op:
        batch_op.create_index('ix_passages_speaker', ['org_id', 'agent_id', 'speaker', 'pk'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('passages', schema=None) as batch_op:
        batch_op.drop_index('ix_passages_speaker')
