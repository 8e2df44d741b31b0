"""archival memory, sources, recall

Messages get an integer key (the full-text index refers to rows by it) and store the whole
serialized Message; archival passages, sources, files, jobs, message vectors and, on SQLite,
FTS5 indexes kept in sync by triggers.

Revision ID: 8c5b174ba196
Revises: 885bc1ed1944
Create Date: 2026-11-25 18:56:21.930091
"""

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = '8c5b174ba196'
down_revision: str | None = '885bc1ed1944'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _rebuild_messages()
    op.create_table('embedding_progress',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('last_pk', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_embedding_progress'))
    )
    op.create_table('passages',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('source_id', sa.String(length=64), nullable=False),
    sa.Column('file_id', sa.String(length=64), nullable=False),
    sa.Column('chunk_index', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('scope', sa.String(length=80), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('speaker', sa.String(length=200), nullable=False),
    sa.Column('metadata_json', sa.JSON(), nullable=False),
    sa.Column('embedding_model', sa.String(length=200), nullable=False),
    sa.Column('embedding_dim', sa.Integer(), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_epoch', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_passages')),
    sa.UniqueConstraint('id', name=op.f('uq_passages_id')),
    sqlite_autoincrement=True,
    )
    with op.batch_alter_table('passages', schema=None) as batch_op:
        batch_op.create_index('ix_passages_agent', ['org_id', 'agent_id', 'embedding_model', 'pk'], unique=False)
        batch_op.create_index('ix_passages_file', ['file_id', 'embedding_dim', 'pk'], unique=False)
        batch_op.create_index('ix_passages_source', ['org_id', 'source_id', 'embedding_model', 'pk'], unique=False)

    op.create_table('sources',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('embedding_model', sa.String(length=200), nullable=False),
    sa.Column('embedding_dim', sa.Integer(), nullable=False),
    sa.Column('metadata_json', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sources')),
    sa.UniqueConstraint('org_id', 'name', name=op.f('uq_sources_org_id_name'))
    )
    op.create_table('files',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('source_id', sa.String(length=64), nullable=False),
    sa.Column('file_name', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=100), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f('fk_files_source_id_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_files'))
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index('ix_files_source', ['org_id', 'source_id', 'created_at', 'id'], unique=False)

    op.create_table('message_vectors',
    sa.Column('message_pk', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('embedding_model', sa.String(length=200), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=False),
    sa.Column('created_epoch', sa.Float(), nullable=False),
    sa.Column('kind', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['message_pk'], ['messages.pk'], name=op.f('fk_message_vectors_message_pk_messages'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('message_pk', name=op.f('pk_message_vectors'))
    )
    with op.batch_alter_table('message_vectors', schema=None) as batch_op:
        batch_op.create_index('ix_message_vectors_scope', ['org_id', 'agent_id', 'embedding_model', 'message_pk'], unique=False)

    op.create_table('passage_tags',
    sa.Column('passage_pk', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=100), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['passage_pk'], ['passages.pk'], name=op.f('fk_passage_tags_passage_pk_passages'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('passage_pk', 'tag', name=op.f('pk_passage_tags'))
    )
    with op.batch_alter_table('passage_tags', schema=None) as batch_op:
        batch_op.create_index('ix_passage_tags_tag', ['org_id', 'tag', 'passage_pk'], unique=False)

    op.create_table('source_attachments',
    sa.Column('source_id', sa.String(length=64), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['source_id'], ['sources.id'], name=op.f('fk_source_attachments_source_id_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('source_id', 'agent_id', name=op.f('pk_source_attachments'))
    )
    with op.batch_alter_table('source_attachments', schema=None) as batch_op:
        batch_op.create_index('ix_source_attachments_agent', ['org_id', 'agent_id'], unique=False)

    op.create_table('file_contents',
    sa.Column('file_id', sa.String(length=64), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], name=op.f('fk_file_contents_file_id_files'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('file_id', name=op.f('pk_file_contents'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('source_id', sa.String(length=64), nullable=False),
    sa.Column('file_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('chunks_total', sa.Integer(), nullable=False),
    sa.Column('chunks_done', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['file_id'], ['files.id'], name=op.f('fk_jobs_file_id_files'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_status', ['status'], unique=False)

    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('is_template', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('template_name', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('from_template', sa.String(length=100), server_default='', nullable=False))
        batch_op.create_unique_constraint(batch_op.f('uq_blocks_org_id_template_name'), ['org_id', 'template_name'])

    if op.get_bind().dialect.name == "sqlite":
        _create_fts("passages", "passages_fts", "pk")
        _create_fts("messages", "messages_fts", "pk")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in ("passages", "messages"):
            for trigger in ("ai", "ad", "au"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_fts_{trigger}")
            op.execute(f"DROP TABLE IF EXISTS {table}_fts")

    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_blocks_org_id_template_name'), type_='unique')
        batch_op.drop_column('from_template')
        batch_op.drop_column('template_name')
        batch_op.drop_column('is_template')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status')

    op.drop_table('jobs')
    op.drop_table('file_contents')
    with op.batch_alter_table('source_attachments', schema=None) as batch_op:
        batch_op.drop_index('ix_source_attachments_agent')

    op.drop_table('source_attachments')
    with op.batch_alter_table('passage_tags', schema=None) as batch_op:
        batch_op.drop_index('ix_passage_tags_tag')

    op.drop_table('passage_tags')
    with op.batch_alter_table('message_vectors', schema=None) as batch_op:
        batch_op.drop_index('ix_message_vectors_scope')

    op.drop_table('message_vectors')
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_source')

    op.drop_table('files')
    op.drop_table('sources')
    with op.batch_alter_table('passages', schema=None) as batch_op:
        batch_op.drop_index('ix_passages_source')
        batch_op.drop_index('ix_passages_file')
        batch_op.drop_index('ix_passages_agent')

    op.drop_table('passages')
    op.drop_table('embedding_progress')
    # Messages keep their integer key and whole-message content on the way down: the older schema
    # reads the content field of the stored message, which is still there.


def _create_fts(table: str, fts: str, key: str) -> None:
    """An external-content FTS5 index over `table.text` and its scope token, kept in sync by triggers."""
    op.execute(
        f"CREATE VIRTUAL TABLE {fts} USING fts5(text, scope, content='{table}', content_rowid='{key}', "
        "tokenize='porter unicode61 remove_diacritics 2')"
    )
    op.execute(
        f"CREATE TRIGGER {table}_fts_ai AFTER INSERT ON {table} BEGIN "
        f"INSERT INTO {fts}(rowid, text, scope) VALUES (new.{key}, new.text, new.scope); END"
    )
    op.execute(
        f"CREATE TRIGGER {table}_fts_ad AFTER DELETE ON {table} BEGIN "
        f"INSERT INTO {fts}({fts}, rowid, text, scope) VALUES ('delete', old.{key}, old.text, old.scope); END"
    )
    op.execute(
        f"CREATE TRIGGER {table}_fts_au AFTER UPDATE OF text, scope ON {table} BEGIN "
        f"INSERT INTO {fts}({fts}, rowid, text, scope) VALUES ('delete', old.{key}, old.text, old.scope); "
        f"INSERT INTO {fts}(rowid, text, scope) VALUES (new.{key}, new.text, new.scope); END"
    )
    op.execute(f"INSERT INTO {fts}({fts}) VALUES ('rebuild')")


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _message_header(message_id: str, agent_id: str, run_id: str, step: int, created: datetime) -> bytes:
    """Fields 1-5 of mnemo.common.v1.Message in wire format (the stored content carries the rest)."""
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    seconds = int(created.timestamp())
    nanos = created.microsecond * 1000
    timestamp = (_varint(1 << 3) + _varint(seconds) if seconds else b"") + (
        _varint(2 << 3) + _varint(nanos) if nanos else b""
    )
    header = _field(1, message_id.encode()) + _field(2, agent_id.encode()) + _field(3, run_id.encode())
    if step:
        header += _varint(4 << 3) + _varint(step)
    return header + _field(5, timestamp)


def _rebuild_messages() -> None:
    """Gives messages an integer key and whole-message content, keeping every row and its order."""
    bind = op.get_bind()
    op.drop_index('ix_messages_batch', table_name='messages')
    if bind.dialect.name != "sqlite":
        # Constraint names are schema-wide there; the new table takes them over.
        op.drop_constraint('uq_messages_org_id_agent_id_seq', 'messages', type_='unique')
        op.drop_constraint('pk_messages', 'messages', type_='primary')
    op.rename_table('messages', 'messages_old')
    old = sa.table(
        "messages_old",
        sa.column("id", sa.String),
        sa.column("org_id", sa.String),
        sa.column("agent_id", sa.String),
        sa.column("seq", sa.Integer),
        sa.column("run_id", sa.String),
        sa.column("step", sa.Integer),
        sa.column("position", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("text", sa.Text),
        sa.column("content", sa.LargeBinary),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    new = op.create_table('messages',
    sa.Column('pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_id', sa.String(length=128), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('scope', sa.String(length=80), nullable=False),
    sa.Column('content', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_messages')),
    sa.UniqueConstraint('id', name=op.f('uq_messages_id')),
    sa.UniqueConstraint('org_id', 'agent_id', 'seq', name=op.f('uq_messages_org_id_agent_id_seq')),
    sqlite_autoincrement=True,
    )
    op.create_index('ix_messages_batch', 'messages', ['org_id', 'agent_id', 'run_id', 'step', 'position'], unique=True)
    op.create_index('ix_messages_agent_pk', 'messages', ['org_id', 'agent_id', 'pk'], unique=False)
    result = bind.execute(sa.select(old).order_by(old.c.org_id, old.c.agent_id, old.c.seq)).mappings()
    while rows := result.fetchmany(1000):
        bind.execute(
            new.insert(),
            [
                {
                    **row,
                    "scope": "agent" + re.sub(r"[^0-9A-Za-z]", "", row["agent_id"]).lower(),
                    "content": _message_header(
                        row["id"], row["agent_id"], row["run_id"], row["step"], row["created_at"]
                    )
                    + row["content"],
                }
                for row in rows
            ],
        )
    op.drop_table('messages_old')
