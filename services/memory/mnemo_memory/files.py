"""Uploaded files: which kinds are accepted and how their text is read.

PDF and HTML files are parsed in a child process of their own (file_parser.py) with limits on CPU time,
memory and pages: a crafted file can make a parser loop, allocate without bound or decompress a bomb,
and that must cost the memory service nothing but one failed job.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import signal
import sys
from dataclasses import dataclass
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


def extract_text(content: bytes, content_type: str, max_pages: int = 0) -> str:
    """The text of a file, in this process: file_parser.py calls it under limits (`FileParser`)."""
    if content_type == "application/pdf":
        return _pdf_text(content, max_pages)
    decoded = content.decode("utf-8")
    if content_type == "text/html":
        parser = _HtmlText()
        parser.feed(decoded)
        parser.close()
        decoded = "".join(parser.parts)
    return re.sub(r"[ \t]+\n", "\n", decoded)


def _pdf_text(content: bytes, max_pages: int) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            raise FileUnreadable("the PDF is encrypted; upload an unencrypted copy")
        if max_pages and len(reader.pages) > max_pages:
            raise FileUnreadable(
                f"the PDF has {len(reader.pages)} pages; at most {max_pages} are read, split it"
            )
        pages = [page.extract_text() or "" for page in reader.pages]
    except PyPdfError as exc:
        raise FileUnreadable(f"the PDF cannot be read: {exc}") from exc
    return "\n\n".join(page.replace("\x00", "") for page in pages)


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """What parsing one file may take."""

    seconds: float
    memory_bytes: int
    max_pages: int
    max_text_bytes: int


class FileParser:
    """Reads files' text: plain text here, PDF and HTML in a limited child process."""

    def __init__(self, limits: ParseLimits) -> None:
        self._limits = limits

    async def text(self, content: bytes, content_type: str) -> str:
        """The file's text; FileUnreadable says why there is none."""
        if content_type not in ("application/pdf", "text/html"):
            return extract_text(content, content_type)
        limits = self._limits
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-B",
            "-m",
            "mnemo_memory.file_parser",
            content_type,
            json.dumps(
                {
                    "cpu_seconds": max(1, int(limits.seconds)),
                    "memory_bytes": limits.memory_bytes,
                    "max_pages": limits.max_pages,
                }
            ),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={},
        )
        try:
            output = await asyncio.wait_for(self._exchange(process, content), limits.seconds + 5)
        except TimeoutError:
            raise FileUnreadable(f"the file could not be parsed within {limits.seconds:g} s") from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return self._result(process.returncode, output)

    async def _exchange(self, process: asyncio.subprocess.Process, content: bytes) -> bytes:
        assert process.stdin is not None
        assert process.stdout is not None
        writer = asyncio.ensure_future(self._feed(process.stdin, content))
        output = bytearray()
        while chunk := await process.stdout.read(1 << 20):
            output += chunk
            if len(output) > self._limits.max_text_bytes + 1024:
                process.kill()
                raise FileUnreadable(
                    f"the file's text is longer than {self._limits.max_text_bytes} bytes; split the file"
                )
        await writer
        await process.wait()
        return bytes(output)

    @staticmethod
    async def _feed(stdin: asyncio.StreamWriter, content: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(content)
            await stdin.drain()
        stdin.close()

    def _result(self, code: int | None, output: bytes) -> str:
        limits = self._limits
        if code is not None and code < 0:
            if -code in (signal.SIGXCPU, signal.SIGKILL):
                raise FileUnreadable(f"the file could not be parsed within {limits.seconds:g} s of CPU time")
            raise FileUnreadable(f"the file could not be parsed (the parser was ended by signal {-code})")
        try:
            reply = json.loads(output)
        except ValueError:
            raise FileUnreadable("the file could not be parsed") from None
        if reply.get("memory"):
            raise FileUnreadable(
                f"parsing the file needed more than {limits.memory_bytes >> 20} MiB of memory; split it"
            )
        if "error" in reply:
            raise FileUnreadable(str(reply["error"]))
        return str(reply["text"])
