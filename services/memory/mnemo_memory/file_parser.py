"""The child process that parses one untrusted file: `python -m mnemo_memory.file_parser TYPE LIMITS`.

It limits itself before it reads a byte (CPU time, address space, no files written, no child
processes), reads the file from stdin and writes {"text": ...} or {"error": ...} as JSON to stdout.
"""

from __future__ import annotations

import json
import resource
import sys


def main() -> int:
    content_type, limits = sys.argv[1], json.loads(sys.argv[2])
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (int(limits["memory_bytes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    from mnemo_memory.files import FileUnreadable, extract_text

    content = sys.stdin.buffer.read()
    try:
        reply: dict[str, object] = {"text": extract_text(content, content_type, int(limits["max_pages"]))}
    except FileUnreadable as exc:
        reply = {"error": str(exc)}
    except MemoryError:
        reply = {"memory": True}
    except RecursionError:
        reply = {"error": "the file nests too deeply to be parsed"}
    sys.stdout.buffer.write(json.dumps(reply, ensure_ascii=False).encode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
