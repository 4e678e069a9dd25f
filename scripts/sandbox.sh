#!/usr/bin/env bash
# `make sandbox`: site.yml for real on two simulated GPU nodes (local podman systemd containers carrying the GPU
# simulator, tests/testbed), the cluster plays in render mode; then the manifests are validated and a report printed.
# A second run changes nothing on the nodes. `make sandbox-clean` (or scripts/sandbox.sh clean) removes it all.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
image=localhost/gpu-ops-node:sandbox
out=$root/build/sandbox
export CONTAINERS_CONF=$root/tests/testbed/containers.conf
declare -A models=([gpu-ops-sandbox-a100]=A100-SXM4-40GB [gpu-ops-sandbox-h200]=H200)

if [ "${1:-}" = clean ]; then
  for node in "${!models[@]}"; do podman rm -f -t 0 "$node" >/dev/null 2>&1 || true; done
  rm -rf "$out"
  echo "sandbox: removed the simulated nodes and $out"
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v podman >/dev/null; then
  echo "sandbox: needs root and podman (make sandbox installs podman, runc and debootstrap when it can)" >&2
  exit 1
fi

echo "sandbox: building the node image and the simulated nvidia-mig-manager packages (cached)"
tests/testbed/build-node-image.sh "$image" | sed 's/^/  /'

for node in "${!models[@]}"; do
  if [ "$(podman inspect --format '{{.State.Running}}' "$node" 2>/dev/null)" != true ]; then
    podman rm -f -t 0 "$node" >/dev/null 2>&1 || true
    podman run -d --name "$node" --hostname "$node" --systemd=always --network=none --restart=always "$image" >/dev/null
    echo "sandbox: started $node"
  fi
done
for node in "${!models[@]}"; do
  for _ in $(seq 1 120); do
    state=$(podman exec "$node" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.5
  done
  if ! podman exec "$node" test -e /var/lib/gpu-sim/state.json; then
    podman exec "$node" gpu-sim init --model "${models[$node]}" --count 8 | sed 's/^/  /'
  fi
done

mkdir -p "$out"
run=$(( $(find "$out" -maxdepth 1 -name 'site-run-*.log' | wc -l) + 1 ))
log=$out/site-run-$run.log
echo "sandbox: ansible-playbook site.yml -i inventories/sandbox (run $run, log $log)"
set +e
ANSIBLE_NOCOLOR=1 .venv/bin/ansible-playbook site.yml -i inventories/sandbox > "$log" 2>&1
rc=$?
set -e
sed -n '/PLAY RECAP/,$p' "$log"
if [ $rc -ne 0 ]; then
  echo "sandbox: site.yml failed (exit $rc); see $log" >&2
  tail -40 "$log" >&2
  exit $rc
fi
exec .venv/bin/python scripts/sandbox_report.py --log "$log" --manifests "$out/manifests" --nodes "${!models[@]}"
