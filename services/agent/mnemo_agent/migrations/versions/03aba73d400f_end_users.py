"""end users

The end users of an application (REST: identities), with their agents and their blocks (which live in the
memory service and are attached to each of their agents there).

Revision ID: 03aba73d400f
Revises: 1747d9474109
Create Date: 2026-12-04 18:42:51.310926
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '03aba73d400f'
down_revision: str | None = '1747d9474109'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('end_users',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('identifier_key', sa.String(length=256), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_end_users')),
    sa.UniqueConstraint('org_id', 'identifier_key', name=op.f('uq_end_users_org_id_identifier_key'))
    )
    with op.batch_alter_table('end_users', schema=None) as batch_op:
        batch_op.create_index('ix_end_users_org_created', ['org_id', 'created_at', 'id'], unique=False)

    op.create_table('end_user_agents',
    sa.Column('end_user_id', sa.String(length=64), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_end_user_agents_agent_id_agents'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['end_user_id'], ['end_users.id'], name=op.f('fk_end_user_agents_end_user_id_end_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('end_user_id', 'agent_id', name=op.f('pk_end_user_agents'))
    )
    with op.batch_alter_table('end_user_agents', schema=None) as batch_op:
        batch_op.create_index('ix_end_user_agents_agent', ['agent_id'], unique=False)

    op.create_table('end_user_blocks',
    sa.Column('end_user_id', sa.String(length=64), nullable=False),
    sa.Column('block_id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['end_user_id'], ['end_users.id'], name=op.f('fk_end_user_blocks_end_user_id_end_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('end_user_id', 'block_id', name=op.f('pk_end_user_blocks'))
    )


def downgrade() -> None:
    op.drop_table('end_user_blocks')
    with op.batch_alter_table('end_user_agents', schema=None) as batch_op:
        batch_op.drop_index('ix_end_user_agents_agent')

    op.drop_table('end_user_agents')
    with op.batch_alter_table('end_users', schema=None) as batch_op:
        batch_op.drop_index('ix_end_users_org_created')

    op.drop_table('end_users')
