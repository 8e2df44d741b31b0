#!/usr/bin/env bash
# Generates the Python stubs (+ .pyi type stubs) of the .proto files: OUT/mnemo/<pkg>/v1/*_pb2*.py.
# Usage: protos/generate.sh PYTHON [OUT]   (a Python with grpcio-tools and mypy-protobuf; OUT: next to the .protos)
# `make proto` writes them into the working tree; the wheel build of mnemo-protos into a scratch folder
# (hatch_build.py).
set -euo pipefail
python=${1:-python3}
if [[ $python == */* ]]; then python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python"); fi
bin=$(dirname "$(command -v "$python")")
cd "$(dirname "$0")"
out=$(mkdir -p "${2:-.}" && cd "${2:-.}" && pwd)
find "$out/mnemo" \( -name '*_pb2*.py*' -o -name '__init__.py' \) -delete 2>/dev/null || true
"$python" -m grpc_tools.protoc -I . \
  --python_out="$out" --mypy_out="$out" --grpc_python_out="$out" --mypy_grpc_out="$out" \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  $(find mnemo -name '*.proto' | sort) 2> >(grep -v '^Writing mypy to' >&2)
# `mnemo` itself stays a namespace package: the client distribution adds mnemo.client and mnemo.rest to it.
find "$out/mnemo" -mindepth 1 -type d -not -name __pycache__ -exec touch {}/__init__.py \;
