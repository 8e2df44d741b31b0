#!/usr/bin/env bash
# The `mnemo` command in a script: ids on stdout, --json for parsing, a failing command exits non-zero.
# Run against a server started with `make run`:  PATH=.venv/bin:$PATH bash examples/cli/quickstart.sh
set -euo pipefail
MODEL=${MNEMO_MODEL:-openai/gpt-4o-mini}
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

agent=$(mnemo agents create cli-quickstart --model "$MODEL" --persona "I am terse." --tag cli-quickstart)
echo "created $agent"
mnemo agents list --tag cli-quickstart
mnemo agents show "$agent"

cat > "$workdir/shout.py" <<'PY'
def shout_example(text: str) -> str:
    """Shouts the text.

    Args:
        text: What to shout.
    """
    return text.upper() + "!"
PY
tool=$(mnemo tools add "$workdir/shout.py" | cut -d' ' -f1)
mnemo tools run "$tool" --arg text=hello

source=$(mnemo sources create cli-handbook)
printf 'Deploys happen on Tuesdays.\n' > "$workdir/handbook.md"
mnemo sources upload "$source" "$workdir/handbook.md"

mnemo agents export "$agent" -o "$workdir/agent.json"
copy=$(mnemo agents import "$workdir/agent.json")
echo "imported $copy"
mnemo usage --by model

mnemo agents list --tag cli-quickstart --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)), "agents")'
mnemo agents delete "$agent"
mnemo agents delete "$copy"
mnemo tools delete "$tool"
mnemo sources delete "$source"
mnemo tools list --type custom --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)), "custom tools")'
