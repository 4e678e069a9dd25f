#!/usr/bin/env bash
# `make sandbox`: site.yml against the embedded sandbox (inventories/sandbox).
# The sandbox needs simulated GPU nodes (systemd containers carrying the GPU simulator). Until they
# exist this says so and fails: it never reports success for work it did not do.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -x "$root/scripts/sandbox-up.sh" ]; then
  cat >&2 <<'MSG'
make sandbox: the sandbox test bed is not built yet.
  It brings up simulated GPU nodes as local systemd containers and runs site.yml on them for real,
  with the cluster plays in render mode. What exists today is checked by `make test`; the modules
  can be run against real nodes with: ansible-playbook site.yml -i inventories/dgx
MSG
  exit 1
fi
"$root/scripts/sandbox-up.sh"
cd "$root"
exec "$root/.venv/bin/ansible-playbook" site.yml -i inventories/sandbox
