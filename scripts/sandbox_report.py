# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The end of `make sandbox`: validate the rendered manifests and print a short report.

Per node: the layout, whether the node says it is in it (the gauge the mig_layout role and the boot-time unit
write for node-exporter), and what the run changed there. For the cluster: the capacity per MIG resource the
device plugin will advertise (gpu_plugins' mig-capacity.yaml), the HPA's ceiling, and where the manifests are.
Exit status 1 when a node is not in its layout or a manifest is invalid.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
if TYPE_CHECKING:
    from tests.k8s_schemas import KUBE_VERSIONS, SchemaError, validate_file
else:  # the same validation the test suite uses (official schemas, strict; CRDs against their own schemas)
    from k8s_schemas import KUBE_VERSIONS, SchemaError, validate_file

GAUGE = re.compile(r'^gpu_ops_mig_layout_matched\{config="([^"]+)"\} ([01])$', re.M)


def node_state(node: str) -> Dict[str, str]:
    proc = subprocess.run(["podman", "exec", node, "cat", "/var/lib/node_exporter/textfile_collector/gpu_ops_mig_layout.prom"],
                          capture_output=True, text=True, check=False, env=dict(os.environ))
    match = GAUGE.search(proc.stdout)
    if proc.returncode != 0 or match is None:
        return {"layout": "?", "verified": "no report on the node"}
    return {"layout": match.group(1), "verified": "yes" if match.group(2) == "1" else "NO"}


def recap(log: str) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for m in re.finditer(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", log, re.M):
        out[m.group(1)] = {"ok": int(m.group(2)), "changed": int(m.group(3)), "failed": int(m.group(5))}
    return out


def objects(manifests: Path) -> List[Any]:
    found: List[Any] = []
    for path in sorted(manifests.rglob("*.yaml")):
        if path.parent == manifests or path.name.endswith(".values.yaml"):
            continue
        found.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--manifests", type=Path, required=True)
    parser.add_argument("--nodes", nargs="+", required=True)
    args = parser.parse_args()
    ok = True

    files = [p for p in sorted(args.manifests.rglob("*.yaml")) if p.parent != args.manifests and not p.name.endswith(".values.yaml")]
    invalid: List[str] = []
    for path in files:
        try:
            validate_file(path)
        except (SchemaError, ValueError, yaml.YAMLError) as exc:
            invalid.append(f"{path.relative_to(args.manifests)}: {exc}")
    ok = ok and not invalid

    runs = recap(args.log.read_text())
    print("\nsandbox report")
    print("  nodes:")
    for node in sorted(args.nodes):
        state = node_state(node)
        changed = runs.get(node, {}).get("changed", "?")
        ok = ok and state["verified"] == "yes"
        print(f"    {node}: layout {state['layout']}, verified {state['verified']}, changed {changed} in this run")

    capacity_file = args.manifests / "mig-capacity.yaml"
    capacity: Dict[str, int] = (yaml.safe_load(capacity_file.read_text()) or {}).get("cluster", {}) if capacity_file.is_file() else {}
    print("  cluster capacity (what the device plugin will advertise):")
    for name, count in sorted(capacity.items()):
        print(f"    {name}: {count}")
    for obj in objects(args.manifests):
        if obj.get("kind") == "HorizontalPodAutoscaler":
            metrics = [m.get("pods", {}).get("metric", {}).get("name") for m in obj["spec"].get("metrics", [])]
            print(f"  HPA {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}: replicas {obj['spec'].get('minReplicas', 1)}"
                  f"..{obj['spec']['maxReplicas']} (ceiling = MIG capacity of its profile), metric {', '.join(str(m) for m in metrics)}")
        elif obj.get("kind") == "ScaledObject":
            print(f"  KEDA ScaledObject {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}: replicas "
                  f"{obj['spec'].get('minReplicaCount', 0)}..{obj['spec'].get('maxReplicaCount')}")
    print(f"  manifests: {args.manifests} ({len(files)} objects, valid for Kubernetes {', '.join(KUBE_VERSIONS)}"
          f"{'' if not invalid else '; INVALID: ' + str(len(invalid))})")
    for line in invalid:
        print(f"    {line}")
    print(f"  log: {args.log}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
