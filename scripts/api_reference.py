"""Writes the gRPC API reference (docs/api/*.md) from the .proto files' descriptors and comments.

    python scripts/api_reference.py           # regenerate docs/api/
    python scripts/api_reference.py --check   # exit 1 when docs/api/ is stale

One page per package: its services (every RPC with its request, response and comment), then its messages
(fields with type and comment) and enums. Comments are the leading comments of the .proto source.
"""

from __future__ import annotations

import argparse
import importlib.resources
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "docs" / "api"
FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    value: name.removeprefix("TYPE_").lower()
    for name, value in FDP.Type.items()
    if name not in ("TYPE_MESSAGE", "TYPE_ENUM", "TYPE_GROUP")
}
# Paths into FileDescriptorProto (descriptor.proto field numbers) whose comments are rendered.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _VALUE, _METHOD = 2, 3, 4, 2, 2


def load_files() -> list[descriptor_pb2.FileDescriptorProto]:
    """The contract's files (with source comments), compiled by grpcio-tools' protoc."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch, "api.binpb")
        well_known = importlib.resources.files("grpc_tools") / "_proto"
        args = [
            "protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            "--include_source_info",
            f"--descriptor_set_out={out}",
            *sources,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    found = {}
    for location in file.source_code_info.location:
        text = location.leading_comments.strip()
        if text:
            paragraphs = text.split("\n\n")
            found[tuple(location.path)] = "\n\n".join(
                " ".join(line.strip() for line in paragraph.splitlines()) for paragraph in paragraphs
            )
    return found


def _link(name: str, package: str) -> str:
    """A link to a message or enum's section: on this page, or on its package's page."""
    if not name.startswith("mnemo."):
        return f"`{name}`"
    page = (
        ""
        if name.startswith(package + ".")
        else next(
            f"{p}.md"
            for p in (name.rsplit(".", n)[0] for n in range(1, name.count(".") + 1))
            if p.endswith(".v1")
        )
    )
    return f"[`{name}`]({page}#{_anchor(name)})"


def _type_of(field: descriptor_pb2.FieldDescriptorProto, maps: dict[str, str], package: str) -> str:
    if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
        name = field.type_name.lstrip(".")
        if name in maps:
            return maps[name]
        shown = _link(name, package)
    else:
        shown = f"`{_SCALARS[field.type]}`"
    if field.label == FDP.LABEL_REPEATED:
        return f"repeated {shown}"
    if field.proto3_optional:
        return f"optional {shown}"
    return shown


def _anchor(full_name: str) -> str:
    return full_name.replace(".", "").lower()


def _cell(text: str) -> str:
    return text.replace("\n\n", " ").replace("|", "\\|")


def render_package(package: str, files: list[descriptor_pb2.FileDescriptorProto]) -> str:
    """The Markdown page of one package."""
    lines = [f"# `{package}`", "", "Generated from `protos/` by `scripts/api_reference.py`; do not edit.", ""]
    for file in files:
        comments = _comments(file)
        for s, service in enumerate(file.service):
            lines += [f"## {service.name}", "", comments.get((_SERVICE, s), ""), ""]
            lines += ["| RPC | Request | Response | Description |", "|---|---|---|---|"]
            for m, method in enumerate(service.method):
                stream = "stream " if method.server_streaming else ""
                request, response = method.input_type.lstrip("."), method.output_type.lstrip(".")
                lines.append(
                    f"| `{method.name}` | [`{request.rsplit('.', 1)[1]}`](#{_anchor(request)}) "
                    f"| {stream}[`{response.rsplit('.', 1)[1]}`](#{_anchor(response)}) "
                    f"| {_cell(comments.get((_SERVICE, s, _METHOD, m), ''))} |"
                )
            lines.append("")
    lines += ["## Messages", ""]
    for file in files:
        comments = _comments(file)
        for i, message in enumerate(file.message_type):
            _render_message(package, lines, f"{package}.{message.name}", message, (_MESSAGE, i), comments)
    enums = [(f, i, e) for f in files for i, e in enumerate(f.enum_type)]
    if enums:
        lines += ["## Enums", ""]
    for file, i, enum in enums:
        _render_enum(lines, f"{package}.{enum.name}", enum, (_ENUM, i), _comments(file))
    return "\n".join(lines).rstrip() + "\n"


def _render_message(
    package: str,
    lines: list[str],
    full_name: str,
    message: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
) -> None:
    if message.options.map_entry:
        return
    maps = {
        f"{full_name}.{nested.name}": f"map<{_type_of(nested.field[0], {}, package)}, {_type_of(nested.field[1], {}, package)}>"
        for nested in message.nested_type
        if nested.options.map_entry
    }
    lines += [f'### <a id="{_anchor(full_name)}"></a>`{full_name}`', ""]
    if comments.get(path):
        lines += [comments[path], ""]
    if message.field:
        lines += ["| Field | Type | Description |", "|---|---|---|"]
        for f, field in enumerate(message.field):
            oneof = ""
            if field.HasField("oneof_index") and not field.proto3_optional:
                oneof = f"(oneof `{message.oneof_decl[field.oneof_index].name}`) "
            description = _cell(oneof + comments.get((*path, _FIELD, f), ""))
            lines.append(f"| `{field.name}` | {_type_of(field, maps, package)} | {description} |")
        lines.append("")
    for n, nested in enumerate(message.nested_type):
        _render_message(package, lines, f"{full_name}.{nested.name}", nested, (*path, _NESTED, n), comments)
    for n, enum in enumerate(message.enum_type):
        _render_enum(lines, f"{full_name}.{enum.name}", enum, (*path, _NESTED_ENUM, n), comments)


def _render_enum(
    lines: list[str],
    full_name: str,
    enum: descriptor_pb2.EnumDescriptorProto,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
) -> None:
    lines += [f'### <a id="{_anchor(full_name)}"></a>`{full_name}`', ""]
    if comments.get(path):
        lines += [comments[path], ""]
    lines += ["| Value | Number | Description |", "|---|---|---|"]
    for v, value in enumerate(enum.value):
        lines.append(f"| `{value.name}` | {value.number} | {_cell(comments.get((*path, _VALUE, v), ''))} |")
    lines.append("")


def render() -> dict[str, str]:
    """Every page of the reference, by file name."""
    by_package: dict[str, list[descriptor_pb2.FileDescriptorProto]] = defaultdict(list)
    for file in load_files():
        by_package[file.package].append(file)
    pages = {f"{package}.md": render_package(package, files) for package, files in sorted(by_package.items())}
    index = [
        "# gRPC API reference",
        "",
        "Generated from `protos/` by `scripts/api_reference.py`; do not edit.",
        "",
    ]
    index += [
        "Every service is reachable at the one gRPC address `mnemo server` prints "
        "(see [docs/grpc.md](../grpc.md)).",
        "",
    ]
    for package, files in sorted(by_package.items()):
        services = ", ".join(s.name for f in files for s in f.service) or "messages only"
        index.append(f"- [`{package}`]({package}.md): {services}")
    pages["README.md"] = "\n".join(index) + "\n"
    return pages


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/api/ differs from the protos")
    args = parser.parse_args()
    pages = render()
    if args.check:
        present = {p.name: p.read_text() for p in OUT.glob("*.md")} if OUT.is_dir() else {}
        if present != pages:
            print("docs/api/ is stale: run `make api-docs`", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for stale in set(p.name for p in OUT.glob("*.md")) - set(pages):
        (OUT / stale).unlink()
    for name, text in pages.items():
        (OUT / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
