#!/usr/bin/env bash
# Generates the Python stubs (+ .pyi type stubs) of protos/ into sdk/python/mnemo/<pkg>/v1/.
# Usage: scripts/gen_protos.sh PYTHON   (a Python with grpcio-tools and mypy-protobuf installed)
set -euo pipefail
python=${1:-python3}
if [[ $python == */* ]]; then python=$(cd "$(dirname "$python")" && pwd)/$(basename "$python"); fi
bin=$(dirname "$(command -v "$python")")
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/sdk/python
cd "$root/protos"
find "$out/mnemo" -name '*_pb2*.py*' -delete
"$python" -m grpc_tools.protoc -I . \
  --python_out="$out" --mypy_out="$out" --grpc_python_out="$out" --mypy_grpc_out="$out" \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  $(find mnemo -name '*.proto' | sort) 2> >(grep -v '^Writing mypy to' >&2)
find "$out/mnemo" -mindepth 1 -type d -not -name __pycache__ -exec touch {}/__init__.py \;
