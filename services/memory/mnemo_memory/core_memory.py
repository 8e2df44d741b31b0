"""Core memory rules: labels, char limits, read-only blocks, shared blocks, templates.

Every write path (create, create from a template, update, the memory tools' append, replace, insert and
rewrite) checks the block's limit before anything is stored, so a refused write leaves the stored value
unchanged. Each write runs as one transaction (one unit of work on the database thread), which also
records the value's new version (block_versions).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection

from mnemo_core.db import Database
from mnemo_core.errors import AlreadyExists, FailedPrecondition, InvalidArgument, MnemoError, NotFound
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow
from mnemo_memory import line_edits
from mnemo_memory.block_version_store import BlockVersionQueries as VQ
from mnemo_memory.block_versions import Versioning, write
from mnemo_memory.blocks import Block, BlockSpec, Editor, check_changeable, check_fits, check_not_read_only
from mnemo_memory.store import BlockQueries as Q
from mnemo_memory.templates import BUILTIN_TEMPLATES

LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
MAX_LIMIT = 1_000_000
MAX_DESCRIPTION = 10_000
UPDATABLE_FIELDS = frozenset({"label", "value", "limit", "description", "read_only", "metadata"})


def _made_by_run(
    conn: Connection, org_id: str, block: Block, operation: str, edit: Callable[[Block], str], editor: Editor
) -> bool:
    """Whether the run already made this very edit (a turn resumed after a crash that came between the
    edit and the storing of its step runs the tool call again): one of the run's versions with the same
    operation turned its `before` into its `after` exactly as this edit would. A turn makes each edit
    once (a repeat is refused), so such a version can only be this call's."""
    if not editor.run_id:
        return False
    for version in VQ.of_run(conn, org_id, block.id, editor.run_id, operation):
        try:
            if edit(dataclasses.replace(block, value=version.before)) == version.after:
                return True
        except MnemoError:
            continue
    return False


def _check_label(label: str, field_name: str) -> str:
    if not LABEL_PATTERN.match(label):
        raise invalid(field_name, "must be 1-100 characters of letters, digits, '_', '.' or '-'")
    return label


def _check_limit(limit: int, default: int, field_name: str) -> int:
    if limit == 0:
        return default
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid(field_name, f"must be between 1 and {MAX_LIMIT}")
    return limit


def _label_taken(agent_id: str, label: str) -> AlreadyExists:
    return AlreadyExists(
        f"agent {agent_id} already has a block labelled '{label}'",
        reason="BLOCK_LABEL_TAKEN",
        metadata={"label": label, "agent_id": agent_id},
    )


def _from_template(spec: BlockSpec, template: Block) -> BlockSpec:
    """The template's fields, overridden by those set in `spec`."""
    return BlockSpec(
        label=spec.label or template.label,
        value=spec.value or template.value,
        limit=spec.limit or template.limit,
        description=spec.description or template.description,
        read_only=spec.read_only or template.read_only,
        metadata=dict(spec.metadata or template.metadata),
    )


class CoreMemory:
    """Blocks of one organization at a time (the org comes with every call)."""

    def __init__(self, db: Database, versioning: Versioning, *, default_limit: int) -> None:
        self._db = db
        self._versioning = versioning
        self._default_limit = default_limit

    def _validated(self, spec: BlockSpec, prefix: str) -> BlockSpec:
        label = _check_label(spec.label, f"{prefix}label")
        limit = _check_limit(spec.limit, self._default_limit, f"{prefix}limit")
        check_text(spec.value, f"{prefix}value", max_chars=MAX_LIMIT)
        check_text(spec.description, f"{prefix}description", max_chars=MAX_DESCRIPTION)
        check_fits(label, spec.value, limit, f"{prefix}value")
        return BlockSpec(label, spec.value, limit, spec.description, spec.read_only, dict(spec.metadata))

    async def install_builtin_templates(self) -> None:
        """Writes the built-in templates, replacing older versions of them."""

        def tx(conn: Connection) -> None:
            now = utcnow()
            for template in BUILTIN_TEMPLATES:
                spec = self._validated(template.spec, "template.")
                Q.upsert_builtin_template(conn, template.id, template.name, spec, now)

        await self._db.write(tx)

    async def create(
        self,
        org_id: str,
        spec: BlockSpec,
        editor: Editor,
        *,
        agent_id: str = "",
        from_template: str = "",
        is_template: bool = False,
        template_name: str = "",
    ) -> Block:
        """Creates one block (attached to `agent_id` when given), or a template, possibly from a template."""
        if is_template:
            if agent_id:
                raise invalid("agent_id", "a template cannot be attached to an agent")
            _check_label(template_name, "block.template_name")
        elif template_name:
            raise invalid("block.template_name", "is only set on templates (is_template); see from_template")
        if from_template:
            _check_label(from_template, "from_template")
        elif not is_template:
            self._validated(spec, "block.")  # fail fast, before taking the write lock

        def tx(conn: Connection) -> Block:
            wanted = spec
            if from_template:
                template = Q.template(conn, org_id, from_template)
                if template is None:
                    raise NotFound(
                        f"no template named '{from_template}'",
                        reason="TEMPLATE_NOT_FOUND",
                        metadata={"template_name": from_template},
                    )
                wanted = _from_template(spec, template)
            valid = self._validated(wanted, "block.")
            if is_template and Q.template_name_taken(conn, org_id, template_name):
                raise AlreadyExists(
                    f"a template named '{template_name}' already exists",
                    reason="TEMPLATE_NAME_TAKEN",
                    metadata={"template_name": template_name},
                )
            if agent_id and Q.label_taken(conn, org_id, agent_id, valid.label):
                raise _label_taken(agent_id, valid.label)
            block_id = new_id("block")
            now = utcnow()
            Q.insert_block(
                conn,
                org_id,
                block_id,
                valid,
                owner_agent_id=None,
                now=now,
                template_name=template_name if is_template else None,
                from_template=from_template,
            )
            self._versioning.first(conn, org_id, block_id, valid.value, editor, now)
            if agent_id:
                Q.attach(conn, org_id, block_id, agent_id, valid.label, now)
            return Q.get(conn, org_id, block_id)

        return await self._db.write(tx)

    async def create_for_agent(
        self, org_id: str, agent_id: str, specs: list[BlockSpec], editor: Editor
    ) -> list[Block]:
        """Creates an agent's initial blocks, all or none; they are deleted with the agent."""
        require_id(agent_id, "agent_id")
        valid = [self._validated(spec, f"blocks[{i}].") for i, spec in enumerate(specs)]
        labels = [spec.label for spec in valid]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise invalid(f"blocks[{i}].label", f"duplicate label '{label}'")

        def tx(conn: Connection) -> list[Block]:
            for spec in valid:
                if Q.label_taken(conn, org_id, agent_id, spec.label):
                    raise _label_taken(agent_id, spec.label)
            started = utcnow()
            for i, spec in enumerate(valid):
                # A microsecond apart: blocks list (and render in the prompt) oldest first, so the request's
                # order survives instead of the random order of their ids.
                now = started + timedelta(microseconds=i)
                block_id = new_id("block")
                Q.insert_block(conn, org_id, block_id, spec, owner_agent_id=agent_id, now=now)
                self._versioning.first(conn, org_id, block_id, spec.value, editor, now)
                Q.attach(conn, org_id, block_id, agent_id, spec.label, now)
            return Q.of_agent(conn, org_id, agent_id)

        created = await self._db.write(tx)
        order = {label: i for i, label in enumerate(labels)}
        return sorted((b for b in created if b.label in order), key=lambda b: order[b.label])

    async def get(self, org_id: str, block_id: str, *, agent_id: str = "", label: str = "") -> Block:
        """One block; NOT_FOUND when it does not exist in this organization.

        With `agent_id`, only a block attached to that agent; with `label` instead of `block_id`, the agent's
        block with that label.
        """
        return await self._db.read(self._addressed, org_id, block_id, agent_id, label)

    async def of_agent(self, org_id: str, agent_id: str) -> list[Block]:
        """Every block attached to an agent, oldest first (the hot path of every turn)."""
        return await self._db.read(Q.of_agent, org_id, agent_id)

    async def list(
        self,
        org_id: str,
        *,
        agent_id: str = "",
        label: str = "",
        templates: bool = False,
        size: int = 0,
        token: str = "",
    ) -> tuple[list[Block], str]:
        """Blocks (or templates), oldest first, optionally of one agent or one label; returns (page, next token)."""
        if templates and agent_id:
            raise invalid("agent_id", "templates are not attached to agents; leave agent_id empty")
        limit = page_size(size)
        listing = "templates" if templates else "blocks"
        position = decode_token(token, listing)
        if position is None and agent_id and not label and limit >= 1000:
            # The hot path of a turn: all of an agent's blocks, one statement.
            blocks = await self.of_agent(org_id, agent_id)
            if len(blocks) <= limit:
                return blocks, ""
        after = None if position is None else (position.time("t"), position.text("i"))
        blocks = await self._db.read(
            lambda conn: Q.list(
                conn,
                org_id,
                agent_id=agent_id,
                label=label,
                templates=templates,
                after=after,
                limit=limit + 1,
            )
        )
        if len(blocks) > limit:
            last = blocks[limit - 1]
            return blocks[:limit], encode_token(listing, t=last.created_at.isoformat(), i=last.id)
        return blocks, ""

    async def update(
        self,
        org_id: str,
        block_id: str,
        changes: dict[str, Any],
        editor: Editor,
        *,
        agent_id: str = "",
        label: str = "",
    ) -> Block:
        """Changes the given fields; the new value must fit the (possibly new) limit.

        The block is addressed as `get` does it, in the transaction that changes it.
        """
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise invalid("update_mask", f"cannot update {', '.join(sorted(unknown))}")

        def tx(conn: Connection) -> Block:
            current = self._versioning.locked(
                conn, org_id, self._addressed(conn, org_id, block_id, agent_id, label)
            )
            check_changeable(current)
            new_label = _check_label(changes.get("label", current.label), "block.label")
            limit = _check_limit(changes.get("limit", current.limit), self._default_limit, "block.limit")
            value = check_text(changes.get("value", current.value), "block.value", max_chars=MAX_LIMIT)
            description = check_text(
                changes.get("description", current.description),
                "block.description",
                max_chars=MAX_DESCRIPTION,
            )
            check_fits(new_label, value, limit, "block.value")
            if new_label != current.label:
                for holder in current.agent_ids:
                    if Q.label_taken(conn, org_id, holder, new_label):
                        raise _label_taken(holder, new_label)
            now = utcnow()
            Q.update_block(
                conn,
                org_id,
                current.id,
                label=new_label,
                limit=limit,
                description=description,
                read_only=changes.get("read_only", current.read_only),
                metadata=changes.get("metadata", current.metadata),
                now=now,
            )
            self._versioning.record(conn, org_id, current, value, "update", editor, now=now)
            return Q.get(conn, org_id, current.id)

        return await write(self._db, tx)

    async def delete(self, org_id: str, block_id: str) -> None:
        """Deletes a block (or template) and detaches it from every agent."""
        require_id(block_id, "block_id")

        def tx(conn: Connection) -> None:
            check_changeable(Q.get(conn, org_id, block_id))
            if not Q.delete_block(conn, org_id, block_id):
                raise NotFound(f"block {block_id} not found", reason="BLOCK_NOT_FOUND")

        await self._db.write(tx)

    async def attach(self, org_id: str, block_id: str, agent_id: str) -> Block:
        """Attaches a block to an agent; the block's label must be free in that agent."""
        require_id(block_id, "block_id")
        require_id(agent_id, "agent_id")

        def tx(conn: Connection) -> Block:
            block = Q.get(conn, org_id, block_id)
            if block.is_template:
                raise FailedPrecondition(
                    f"block {block_id} is a template; create a block from it (from_template) and attach that",
                    reason="BLOCK_IS_TEMPLATE",
                )
            if agent_id in block.agent_ids:
                return block
            if Q.label_taken(conn, org_id, agent_id, block.label):
                raise _label_taken(agent_id, block.label)
            Q.attach(conn, org_id, block_id, agent_id, block.label, utcnow())
            return Q.get(conn, org_id, block_id)

        return await self._db.write(tx)

    async def detach(self, org_id: str, block_id: str, agent_id: str) -> Block:
        """Detaches a block from an agent; NOT_FOUND if it was not attached."""
        require_id(block_id, "block_id")
        require_id(agent_id, "agent_id")

        def tx(conn: Connection) -> Block:
            block = Q.get(conn, org_id, block_id)
            if agent_id not in block.agent_ids:
                raise NotFound(
                    f"block {block_id} is not attached to agent {agent_id}", reason="BLOCK_NOT_ATTACHED"
                )
            Q.detach(conn, org_id, block_id, agent_id)
            return Q.get(conn, org_id, block_id)

        return await self._db.write(tx)

    async def append(self, org_id: str, agent_id: str, label: str, content: str, editor: Editor) -> Block:
        """Appends `content` on a new line of the agent's block `label` (core_memory_append)."""
        check_text(content, "content", max_chars=MAX_LIMIT, allow_empty=False)

        def edit(block: Block) -> str:
            value = f"{block.value}\n{content}" if block.value else content
            check_fits(block.label, value, block.limit, "content")
            return value

        return await self._edit(org_id, agent_id, label, "append", edit, editor)

    async def replace(
        self,
        org_id: str,
        agent_id: str,
        label: str,
        old: str,
        new: str,
        editor: Editor,
        *,
        unique: bool = False,
    ) -> Block:
        """Replaces `old` in the agent's block `label`: every occurrence (core_memory_replace), or the one
        occurrence when `unique` (memory_replace; none or several is an error naming their lines)."""
        check_text(old, "old_content", max_chars=MAX_LIMIT, allow_empty=False)
        check_text(new, "new_content", max_chars=MAX_LIMIT)

        def edit(block: Block) -> str:
            if unique:
                value = line_edits.replace_once(block.label, block.value, old, new)
            elif old not in block.value:
                raise InvalidArgument(
                    f"old_content was not found in block '{label}'; it must match the block's text exactly",
                    reason="BLOCK_CONTENT_NOT_FOUND",
                    metadata={"label": label},
                ).with_violation("old_content", "not found in the block")
            else:
                value = block.value.replace(old, new)
            check_fits(block.label, value, block.limit, "new_content")
            return value

        return await self._edit(org_id, agent_id, label, "replace", edit, editor)

    async def insert(
        self, org_id: str, agent_id: str, label: str, text: str, after_line: int | None, editor: Editor
    ) -> Block:
        """Inserts `text` after line `after_line` of the agent's block `label` (None: at the end; memory_insert)."""
        check_text(text, "text", max_chars=MAX_LIMIT, allow_empty=False)

        def edit(block: Block) -> str:
            value = line_edits.insert_lines(block.label, block.value, text, after_line)
            check_fits(block.label, value, block.limit, "text")
            return value

        return await self._edit(org_id, agent_id, label, "insert", edit, editor)

    async def rewrite(self, org_id: str, agent_id: str, label: str, value: str, editor: Editor) -> Block:
        """Replaces the agent's block `label` whole (memory_rethink)."""
        check_text(value, "value", max_chars=MAX_LIMIT)

        def edit(block: Block) -> str:
            check_fits(block.label, value, block.limit, "value")
            return value

        return await self._edit(org_id, agent_id, label, "rewrite", edit, editor)

    async def _edit(
        self,
        org_id: str,
        agent_id: str,
        label: str,
        operation: str,
        edit: Callable[[Block], str],
        editor: Editor,
    ) -> Block:
        """Applies a memory tool's edit to the agent's writable block `label`, as a new version."""
        require_id(agent_id, "agent_id")
        _check_label(label, "label")

        def tx(conn: Connection) -> Block:
            block = self._versioning.locked(conn, org_id, self._by_label(conn, org_id, agent_id, label))
            check_not_read_only(block, "your memory tools cannot change it")
            if not _made_by_run(conn, org_id, block, operation, edit, editor):
                self._versioning.record(conn, org_id, block, edit(block), operation, editor, now=utcnow())
            return Q.get(conn, org_id, block.id)

        return await write(self._db, tx)

    async def detach_agent(self, org_id: str, agent_id: str) -> int:
        """Detaches every block from a removed agent; deletes the ones made for it and used nowhere else."""
        require_id(agent_id, "agent_id")
        return await self._db.write(Q.detach_agent, org_id, agent_id)

    def _addressed(self, conn: Connection, org_id: str, block_id: str, agent_id: str, label: str) -> Block:
        """The block by id (attached to `agent_id` when given), or by `agent_id` and `label`."""
        if not block_id and agent_id:
            require_id(agent_id, "agent_id")
            return self._by_label(conn, org_id, agent_id, label)
        require_id(block_id, "block_id")
        block = Q.get(conn, org_id, block_id)
        if agent_id and agent_id not in block.agent_ids:
            raise NotFound(
                f"block {block_id} is not attached to agent {agent_id}",
                reason="BLOCK_NOT_FOUND",
                metadata={"block_id": block_id, "agent_id": agent_id},
            )
        return block

    @staticmethod
    def _by_label(conn: Connection, org_id: str, agent_id: str, label: str) -> Block:
        block = Q.get_by_label(conn, org_id, agent_id, label)
        if block is None:
            labels = Q.labels_of(conn, org_id, agent_id)
            raise NotFound(
                f"agent has no block labelled '{label}'; its blocks are: {', '.join(labels) or 'none'}",
                reason="BLOCK_NOT_FOUND",
                metadata={"label": label},
            )
        return block
