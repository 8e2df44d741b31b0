"""Uploaded files: which kinds are accepted and how their text is read."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import PurePosixPath

from mnemo_core.errors import InvalidArgument
from mnemo_core.validation import invalid

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}
TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/html"})
SUPPORTED_TYPES = frozenset(CONTENT_TYPES.values())
MAX_FILE_NAME = 255


class FileUnreadable(Exception):
    """The file's content cannot be turned into text; the message says why."""


def content_type_of(file_name: str, declared: str) -> str:
    """The media type the file is read as: the declared one if supported, else guessed from its name."""
    if not file_name or len(file_name) > MAX_FILE_NAME or "\x00" in file_name or "/" in file_name:
        raise invalid("file_name", f"must be 1-{MAX_FILE_NAME} characters without '/' or NUL")
    declared = declared.split(";", maxsplit=1)[0].strip().lower()
    if declared and declared in SUPPORTED_TYPES:
        return declared
    guessed = CONTENT_TYPES.get(PurePosixPath(file_name).suffix.lower())
    if guessed is not None and declared in ("", "application/octet-stream"):
        return guessed
    supported = ", ".join(sorted(SUPPORTED_TYPES))
    raise InvalidArgument(
        f"unsupported file type {declared or PurePosixPath(file_name).suffix or 'without extension'}; "
        f"supported: {supported} (.txt, .md, .html, .pdf)",
        reason="UNSUPPORTED_FILE_TYPE",
    ).with_violation("content_type", "unsupported")


def check_text_content(content: bytes, content_type: str) -> None:
    """Refuses a text file that is not UTF-8 (or contains NUL), before anything is stored."""
    if content_type not in TEXT_TYPES:
        if not content.startswith(b"%PDF-"):
            raise invalid("content", "is not a PDF file (it does not start with %PDF-)")
        return
    try:
        decoded = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"the file is not valid UTF-8 (invalid byte at offset {exc.start}); convert it to UTF-8",
            reason="INVALID_UTF8",
            metadata={"offset": str(exc.start)},
        ).with_violation("content", "not valid UTF-8") from None
    if "\x00" in decoded:
        raise invalid("content", "must not contain NUL characters")


class _HtmlText(HTMLParser):
    """Visible text of an HTML page: scripts and styles dropped, blocks on their own lines."""

    _SKIP = frozenset({"script", "style", "noscript", "template"})
    _BLOCK = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "tr",
            "section",
            "article",
            "pre",
            "table",
        }
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def extract_text(content: bytes, content_type: str) -> str:
    """The text of a file (CPU-bound for PDFs: call it off the event loop)."""
    if content_type == "application/pdf":
        return _pdf_text(content)
    decoded = content.decode("utf-8")
    if content_type == "text/html":
        parser = _HtmlText()
        parser.feed(decoded)
        parser.close()
        decoded = "".join(parser.parts)
    return re.sub(r"[ \t]+\n", "\n", decoded)


def _pdf_text(content: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            raise FileUnreadable("the PDF is encrypted; upload an unencrypted copy")
        pages = [page.extract_text() or "" for page in reader.pages]
    except PyPdfError as exc:
        raise FileUnreadable(f"the PDF cannot be read: {exc}") from exc
    return "\n\n".join(page.replace("\x00", "") for page in pages)
