"""Cutting long text into passages that fit the embedding model's window."""

from __future__ import annotations

import re

# all-MiniLM-L6-v2 reads 256 tokens, roughly 1,000 characters of English: longer chunks lose their tail.
DEFAULT_CHUNK_CHARS = 1000
_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"[.!?;:]\s"), re.compile(r"\s"))


def chunk_text(text: str, max_chars: int = DEFAULT_CHUNK_CHARS) -> list[str]:
    """Chunks of at most `max_chars`, cut at the last paragraph, line, sentence or word break that keeps
    each chunk at least half full; whitespace-only chunks are dropped."""
    chunks: list[str] = []
    start = 0
    length = len(text)
    while start < length:
        end = min(start + max_chars, length)
        if end < length:
            window = text[start + max_chars // 2 : end]
            for pattern in _BREAKS:
                ends = [match.end() for match in pattern.finditer(window)]
                if ends:
                    end = start + max_chars // 2 + ends[-1]
                    break
        piece = text[start:end].strip()
        if piece:
            chunks.append(piece)
        start = end
    return chunks
