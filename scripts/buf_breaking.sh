#!/usr/bin/env bash
# Fails when protos/ breaks the published contract (buf's FILE rules): on a branch, against main; on main,
# against the previous commit. Skipped, with a note, where git has neither (e.g. a shallow clone).
set -euo pipefail
buf="$1"
head=$(git rev-parse HEAD)
if main=$(git rev-parse --verify -q main) && [ "$main" != "$head" ]; then
	against="main"
elif git rev-parse --verify -q HEAD~1 >/dev/null; then
	against="HEAD~1"
else
	echo "buf breaking: skipped (no main branch or previous commit to compare with)"
	exit 0
fi
# Only the contract module: the vendored google.rpc module is not ours to keep compatible.
"$buf" breaking protos --against ".git#ref=$against,subdir=protos"
