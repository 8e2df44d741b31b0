"""A multipart/form-data body of one file, sent in pieces so that an upload can report its progress."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

# Small enough for a progress bar to move smoothly, large enough not to cost a syscall per few bytes.
CHUNK_BYTES = 64 * 1024


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


@dataclass(frozen=True)
class MultipartUpload:
    """One form field holding one file."""

    field_name: str
    file_name: str
    content: bytes
    content_type: str
    boundary: str = field(default_factory=lambda: secrets.token_hex(16))

    def _head(self) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="{_quoted(self.field_name)}"; '
            f'filename="{_quoted(self.file_name)}"\r\n'
            f"Content-Type: {self.content_type}\r\n\r\n"
        ).encode()

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()

    @property
    def size(self) -> int:
        """The body's length in bytes."""
        return len(self._head()) + len(self.content) + len(self._tail())

    def headers(self) -> dict[str, str]:
        """Content-Type (with the boundary) and Content-Length."""
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(self.size),
        }

    def chunks(self, progress: Callable[[int, int], None]) -> Iterator[bytes]:
        """The body in pieces; `progress(sent, total)` after each."""
        total = self.size
        head = self._head()
        progress(0, total)
        yield head
        sent = len(head)
        view = memoryview(self.content)
        for start in range(0, len(view), CHUNK_BYTES):
            piece = bytes(view[start : start + CHUNK_BYTES])
            yield piece
            sent += len(piece)
            progress(sent, total)
        yield self._tail()
        progress(total, total)
