"""postgres search: pgvector and full-text search for passages and recall

On Postgres: the pgvector extension, vectors in untyped `vector` columns with one HNSW index
(cosine) per common dimension, and a generated `search_text` tsvector column with a GIN index on
passages and messages (docs/adr/0201-postgres-passage-and-recall-search.md). On SQLite nothing
changes: FTS5 and float32 blobs stay as they are.

Before this revision nothing could store a vector on Postgres (the memory service refused archival
and recall work there), so the vector columns change type without converting data.

Revision ID: 1e2d1aebde18
Revises: 8c5b174ba196
Create Date: 2026-12-02 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '1e2d1aebde18'
down_revision: str | None = '8c5b174ba196'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Keep in step with mnemo_memory.pg_search.INDEXED_DIMENSIONS.
INDEXED_DIMENSIONS = (384, 768, 1024, 1536)
# ASCII punctuation splits words, as FTS5's unicode61 tokenizer does ("INV-4471" -> inv, 4471).
DOCUMENT = "to_tsvector('mnemo_english'::regconfig, regexp_replace(text, '[[:punct:]]', ' ', 'g'))"
# (table, expression of a row's vector dimension)
VECTOR_TABLES = (("passages", "embedding_dim"), ("message_vectors", "vector_dims(embedding)"))


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # Created in the memory schema (first on the search path) unless the database already has it.
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    if bind.scalar(sa.text("SELECT to_regtype('vector')")) is None:
        schema = bind.scalar(
            sa.text("SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'vector'")
        )
        raise RuntimeError(
            f"the pgvector extension is installed in schema {schema!r}, which the memory service does not "
            f"see; move it (ALTER EXTENSION vector SET SCHEMA memory) or drop it and let the migration create it"
        )
    # English stemming without stop words: FTS5 indexes every word, and queries drop stop words themselves.
    op.execute("CREATE TEXT SEARCH DICTIONARY mnemo_english_stem (TEMPLATE = snowball, LANGUAGE = english)")
    op.execute("CREATE TEXT SEARCH CONFIGURATION mnemo_english (COPY = english)")
    op.execute("ALTER TEXT SEARCH CONFIGURATION mnemo_english ALTER MAPPING REPLACE english_stem WITH mnemo_english_stem")
    for table in ("passages", "messages"):
        op.execute(f"ALTER TABLE {table} ADD COLUMN search_text tsvector GENERATED ALWAYS AS ({DOCUMENT}) STORED")
        op.execute(f"CREATE INDEX ix_{table}_search_text ON {table} USING gin (search_text)")
    for table, dimension in VECTOR_TABLES:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE vector USING NULL")
        for dim in INDEXED_DIMENSIONS:
            op.execute(
                f"CREATE INDEX ix_{table}_embedding_{dim} ON {table} "
                f"USING hnsw ((CAST(embedding AS vector({dim}))) vector_cosine_ops) WHERE {dimension} = {dim}"
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # The older schema cannot search on Postgres: vectors go, and recall starts embedding from scratch.
    op.execute("DELETE FROM message_vectors")
    op.execute("DELETE FROM embedding_progress WHERE name = 'messages'")
    for table, _ in VECTOR_TABLES:
        for dim in INDEXED_DIMENSIONS:
            op.execute(f"DROP INDEX ix_{table}_embedding_{dim}")
        op.execute(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE bytea USING NULL")
    for table in ("passages", "messages"):
        op.execute(f"DROP INDEX ix_{table}_search_text")
        op.execute(f"ALTER TABLE {table} DROP COLUMN search_text")
    op.execute("DROP TEXT SEARCH CONFIGURATION mnemo_english")
    op.execute("DROP TEXT SEARCH DICTIONARY mnemo_english_stem")
