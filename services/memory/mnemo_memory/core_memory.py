"""Core memory rules: labels, char limits, read-only blocks, shared blocks.

Every write path (create, update, append, replace) checks the block's limit before anything is
stored, so a refused write leaves the stored value unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from mnemo_core.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from mnemo_core.ids import new_id, require_id
from mnemo_core.paging import decode_token, encode_token, page_size
from mnemo_core.validation import check_text, invalid
from mnemo_core.wire import utcnow
from mnemo_memory.blocks import Block, BlockSpec
from mnemo_memory.store import BlockStore, BlockTx

LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
MAX_LIMIT = 1_000_000
MAX_DESCRIPTION = 10_000
UPDATABLE_FIELDS = frozenset({"label", "value", "limit", "description", "read_only", "metadata"})


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


def check_fits(label: str, value: str, limit: int, field_name: str = "value") -> None:
    """Refuses a value longer than the block's limit, saying by how much."""
    if len(value) > limit:
        raise InvalidArgument(
            f"block '{label}' would hold {len(value)} characters but its limit is {limit}",
            reason="BLOCK_LIMIT_EXCEEDED",
            metadata={"label": label, "length": str(len(value)), "limit": str(limit)},
        ).with_violation(field_name, f"{len(value)} characters exceed the limit of {limit}")


class CoreMemory:
    """Blocks of one organization at a time (the org comes with every call)."""

    def __init__(self, store: BlockStore, *, default_limit: int) -> None:
        self._store = store
        self._default_limit = default_limit

    def _validated(self, spec: BlockSpec, prefix: str) -> BlockSpec:
        label = _check_label(spec.label, f"{prefix}label")
        limit = _check_limit(spec.limit, self._default_limit, f"{prefix}limit")
        check_text(spec.value, f"{prefix}value", max_chars=MAX_LIMIT)
        check_text(spec.description, f"{prefix}description", max_chars=MAX_DESCRIPTION)
        check_fits(label, spec.value, limit, f"{prefix}value")
        return BlockSpec(label, spec.value, limit, spec.description, spec.read_only, dict(spec.metadata))

    async def create(self, org_id: str, spec: BlockSpec, *, agent_id: str = "") -> Block:
        """Creates one block, attached to `agent_id` when given."""
        valid = self._validated(spec, "block.")
        now = utcnow()
        async with self._store.transaction() as tx:
            if agent_id and await tx.label_taken(org_id, agent_id, valid.label):
                raise AlreadyExists(
                    f"agent {agent_id} already has a block labelled '{valid.label}'",
                    reason="BLOCK_LABEL_TAKEN",
                )
            block_id = new_id("block")
            await tx.insert_block(org_id, block_id, valid, owner_agent_id=None, now=now)
            if agent_id:
                await tx.attach(org_id, block_id, agent_id, valid.label, now)
            return await tx.get(org_id, block_id)

    async def create_for_agent(self, org_id: str, agent_id: str, specs: list[BlockSpec]) -> list[Block]:
        """Creates an agent's initial blocks, all or none; they are deleted with the agent."""
        require_id(agent_id, "agent_id")
        valid = [self._validated(spec, f"blocks[{i}].") for i, spec in enumerate(specs)]
        labels = [spec.label for spec in valid]
        for i, label in enumerate(labels):
            if label in labels[:i]:
                raise invalid(f"blocks[{i}].label", f"duplicate label '{label}'")
        now = utcnow()
        async with self._store.transaction() as tx:
            for spec in valid:
                if await tx.label_taken(org_id, agent_id, spec.label):
                    raise AlreadyExists(
                        f"agent {agent_id} already has a block labelled '{spec.label}'",
                        reason="BLOCK_LABEL_TAKEN",
                    )
            ids = []
            for spec in valid:
                block_id = new_id("block")
                await tx.insert_block(org_id, block_id, spec, owner_agent_id=agent_id, now=now)
                await tx.attach(org_id, block_id, agent_id, spec.label, now)
                ids.append(block_id)
            return [await tx.get(org_id, block_id) for block_id in ids]

    async def get(self, org_id: str, block_id: str) -> Block:
        """One block; NOT_FOUND when it does not exist in this organization."""
        require_id(block_id, "block_id")
        async with self._store.reading() as tx:
            return await tx.get(org_id, block_id)

    async def list(
        self, org_id: str, *, agent_id: str = "", label: str = "", size: int = 0, token: str = ""
    ) -> tuple[list[Block], str]:
        """Blocks, oldest first, optionally of one agent or one label; returns (page, next token)."""
        limit = page_size(size)
        position = decode_token(token, "blocks")
        after = None if position is None else (position.time("t"), position.text("i"))
        async with self._store.reading() as tx:
            blocks = await tx.list(org_id, agent_id=agent_id, label=label, after=after, limit=limit + 1)
        if len(blocks) > limit:
            last = blocks[limit - 1]
            return blocks[:limit], encode_token("blocks", t=last.created_at.isoformat(), i=last.id)
        return blocks, ""

    async def update(self, org_id: str, block_id: str, changes: dict[str, Any]) -> Block:
        """Changes the given fields; the new value must fit the (possibly new) limit."""
        require_id(block_id, "block_id")
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise invalid("update_mask", f"cannot update {', '.join(sorted(unknown))}")
        async with self._store.transaction() as tx:
            current = await tx.get(org_id, block_id)
            label = _check_label(changes.get("label", current.label), "block.label")
            limit = _check_limit(changes.get("limit", current.limit), self._default_limit, "block.limit")
            value = check_text(changes.get("value", current.value), "block.value", max_chars=MAX_LIMIT)
            description = check_text(
                changes.get("description", current.description),
                "block.description",
                max_chars=MAX_DESCRIPTION,
            )
            check_fits(label, value, limit, "block.value")
            if label != current.label:
                for agent_id in current.agent_ids:
                    if await tx.label_taken(org_id, agent_id, label):
                        raise AlreadyExists(
                            f"agent {agent_id} already has a block labelled '{label}'",
                            reason="BLOCK_LABEL_TAKEN",
                        )
            await tx.update_block(
                org_id,
                block_id,
                label=label,
                value=value,
                limit=limit,
                description=description,
                read_only=changes.get("read_only", current.read_only),
                metadata=changes.get("metadata", current.metadata),
                now=utcnow(),
            )
            return await tx.get(org_id, block_id)

    async def delete(self, org_id: str, block_id: str) -> None:
        """Deletes a block and detaches it from every agent."""
        require_id(block_id, "block_id")
        async with self._store.transaction() as tx:
            if not await tx.delete_block(org_id, block_id):
                raise NotFound(f"block {block_id} not found", reason="BLOCK_NOT_FOUND")

    async def attach(self, org_id: str, block_id: str, agent_id: str) -> Block:
        """Attaches a block to an agent; the block's label must be free in that agent."""
        require_id(block_id, "block_id")
        require_id(agent_id, "agent_id")
        async with self._store.transaction() as tx:
            block = await tx.get(org_id, block_id)
            if agent_id in block.agent_ids:
                return block
            if await tx.label_taken(org_id, agent_id, block.label):
                raise AlreadyExists(
                    f"agent {agent_id} already has a block labelled '{block.label}'",
                    reason="BLOCK_LABEL_TAKEN",
                    metadata={"label": block.label},
                )
            await tx.attach(org_id, block_id, agent_id, block.label, utcnow())
            return await tx.get(org_id, block_id)

    async def detach(self, org_id: str, block_id: str, agent_id: str) -> Block:
        """Detaches a block from an agent; NOT_FOUND if it was not attached."""
        require_id(block_id, "block_id")
        require_id(agent_id, "agent_id")
        async with self._store.transaction() as tx:
            block = await tx.get(org_id, block_id)
            if agent_id not in block.agent_ids:
                raise NotFound(
                    f"block {block_id} is not attached to agent {agent_id}", reason="BLOCK_NOT_ATTACHED"
                )
            await tx.detach(org_id, block_id, agent_id)
            return await tx.get(org_id, block_id)

    async def append(self, org_id: str, agent_id: str, label: str, content: str) -> Block:
        """Appends `content` on a new line of the agent's block `label` (core_memory_append)."""
        check_text(content, "content", max_chars=MAX_LIMIT, allow_empty=False)
        async with self._store.transaction() as tx:
            block = await self._writable(tx, org_id, agent_id, label)
            value = f"{block.value}\n{content}" if block.value else content
            check_fits(block.label, value, block.limit, "content")
            await tx.set_value(org_id, block.id, value, utcnow())
            return await tx.get(org_id, block.id)

    async def replace(self, org_id: str, agent_id: str, label: str, old: str, new: str) -> Block:
        """Replaces every occurrence of `old` in the agent's block `label` (core_memory_replace)."""
        check_text(old, "old_content", max_chars=MAX_LIMIT, allow_empty=False)
        check_text(new, "new_content", max_chars=MAX_LIMIT)
        async with self._store.transaction() as tx:
            block = await self._writable(tx, org_id, agent_id, label)
            if old not in block.value:
                raise InvalidArgument(
                    f"old_content was not found in block '{label}'; it must match the block's text exactly",
                    reason="BLOCK_CONTENT_NOT_FOUND",
                    metadata={"label": label},
                ).with_violation("old_content", "not found in the block")
            value = block.value.replace(old, new)
            check_fits(block.label, value, block.limit, "new_content")
            await tx.set_value(org_id, block.id, value, utcnow())
            return await tx.get(org_id, block.id)

    async def detach_agent(self, org_id: str, agent_id: str) -> int:
        """Detaches every block from a removed agent; deletes the ones made for it and used nowhere else."""
        require_id(agent_id, "agent_id")
        async with self._store.transaction() as tx:
            return await tx.detach_agent(org_id, agent_id)

    async def _writable(self, tx: BlockTx, org_id: str, agent_id: str, label: str) -> Block:
        require_id(agent_id, "agent_id")
        _check_label(label, "label")
        block = await tx.get_by_label(org_id, agent_id, label)
        if block is None:
            labels = await tx.labels_of(org_id, agent_id)
            raise NotFound(
                f"agent has no block labelled '{label}'; its blocks are: {', '.join(labels) or 'none'}",
                reason="BLOCK_NOT_FOUND",
                metadata={"label": label},
            )
        if block.read_only:
            raise PermissionDenied(
                f"block '{label}' is read-only", reason="BLOCK_READ_ONLY", metadata={"label": label}
            )
        return block
