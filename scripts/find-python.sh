#!/usr/bin/env bash
# Print the path of a Python >= 3.12 for the control-node virtualenv.
# Order: $PYTHON if set, python3.12/python3.13 on PATH, pyenv's versions, python3.
# ansible-core >= 2.20 needs Python >= 3.12 on the control node.
set -euo pipefail

ok() {
  "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

candidates=()
[ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
for name in python3.12 python3.13; do
  p=$(command -v "$name" 2>/dev/null || true)
  [ -n "$p" ] && candidates+=("$p")
done
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for d in $(ls -d "$root"/versions/3.1[2-9]* 2>/dev/null | sort -V); do
    candidates+=("$d/bin/python3")
  done
fi
p=$(command -v python3 2>/dev/null || true)
[ -n "$p" ] && candidates+=("$p")

for c in "${candidates[@]}"; do
  if [ -x "$c" ] && ok "$c"; then
    # Resolve pyenv shims to the real interpreter so the venv does not depend on them.
    "$c" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
echo "find-python: no Python >= 3.12 found (tried: ${candidates[*]:-none})." >&2
echo "Install one (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12." >&2
exit 1
