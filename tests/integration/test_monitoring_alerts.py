# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The MIG layout gauge reaches Prometheus: real node_exporter (Debian's prometheus-node-exporter 1.5) run with the
arguments role monitoring renders for kube-prometheus-stack's node-exporter, reading the file role mig_layout writes,
scraped by a real Prometheus 2.42 with the rendered ServiceMonitor relabeling (node label), which evaluates the
rendered PrometheusRule. Also: every dashboard query parses on that Prometheus, and the layout panel returns series.

The subchart (prometheus-node-exporter, templates/daemonset.yaml) passes extraArgs to node_exporter and mounts each
extraHostVolumeMounts hostPath at its mountPath; here a directory per node stands for the host directory and the
mount path in the arguments is replaced by it, after checking the mount maps the one onto the other.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.servers.processes import http_process
    from tests.servers.prometheus import PrometheusProcess, prometheus_rule_groups, prometheus_server
    from tests.servers.triton import free_port
else:
    from ansible_run import ansible_env
    from servers.processes import http_process
    from servers.prometheus import PrometheusProcess, prometheus_rule_groups, prometheus_server
    from servers.triton import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
VAULT = ["-e", "vault_grafana_admin_password=monitoring-test-Pa55", "-e", "vault_triton_restricted_api_key=monitoring-test-key-0123456789"]
NODES = {"dgx-a100-01": "all-1g.5gb", "dgx-a100-02": "all-balanced"}

pytestmark = pytest.mark.slow


def gauge_file(config: str, value: int) -> str:
    """What role mig_layout writes (vars/main.yml: __mig_layout_textfile_header and __mig_layout_gauge_line)."""
    header = yaml.safe_load((ROOT / "roles/mig_layout/vars/main.yml").read_text())["__mig_layout_textfile_header"]
    return "\n".join([*header, f'gpu_ops_mig_layout_matched{{config="{config}"}} {value}']) + "\n"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    out = tmp_path_factory.mktemp("monitoring-render") / "out"
    env = ansible_env(out.parent)
    argv = [str(BIN / "ansible-playbook"), "playbooks/serving.yml", "-i", "inventories/dgx", "--tags", "monitoring", *VAULT,
            "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}",
            "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    rules = sorted((out / "monitoring_rules").glob("*-prometheusrule-*.yaml"))
    boards = [yaml.safe_load(p.read_text()) for p in sorted((out / "monitoring_rules").glob("*-configmap-*.yaml"))]
    return {"values": yaml.safe_load((out / "monitoring/kube-prometheus-stack.values.yaml").read_text()),
            "rule": yaml.safe_load(rules[0].read_text()), "dashboards": boards}


@contextlib.contextmanager
def node_exporter(args: List[str], port: int, log: Path) -> Iterator[str]:
    if not Path(NODE_EXPORTER).is_file():
        pytest.fail(f"{NODE_EXPORTER} is missing: `apt-get install prometheus-node-exporter` (make test installs it)")
    argv = [NODE_EXPORTER, *args, f"--web.listen-address=127.0.0.1:{port}"]
    with http_process(argv, log, f"http://127.0.0.1:{port}/metrics", name="node_exporter"):
        yield f"127.0.0.1:{port}"


def wait_query(prom: PrometheusProcess, expr: str, want: Dict[str, float], timeout: float = 30.0) -> Dict[str, float]:
    deadline = time.monotonic() + timeout
    got: Dict[str, float] = {}
    while time.monotonic() < deadline:
        got = {json.loads(k).get("node", k) if k.startswith("{") else k: v for k, v in prom.query(expr).items()}
        if got == want:
            return got
        time.sleep(0.5)
    return got


def test_layout_gauge_per_node_and_alert_and_dashboards(rendered: Dict[str, Any], tmp_path: Path) -> None:
    values = rendered["values"]["prometheus-node-exporter"]
    mounts = values["extraHostVolumeMounts"]
    assert len(mounts) == 1
    assert mounts[0]["readOnly"] is True
    # the host directory is the one role mig_layout writes into (its default)
    mig_defaults = yaml.safe_load((ROOT / "roles/mig_layout/defaults/main.yml").read_text())
    assert mounts[0]["hostPath"] == mig_defaults["mig_layout_textfile_dir"]
    textfile_args = [a for a in values["extraArgs"] if a.startswith("--collector.textfile.directory=")]
    assert textfile_args == [f"--collector.textfile.directory={mounts[0]['mountPath']}"]
    relabel = [{"source_labels": r["sourceLabels"], "target_label": r["targetLabel"], "action": r["action"]}
               for r in values["prometheus"]["monitor"]["relabelings"]]
    with contextlib.ExitStack() as stack:
        targets = []
        for node, config in NODES.items():
            host_dir = tmp_path / node / "textfile"
            host_dir.mkdir(parents=True)
            (host_dir / "gpu_ops_mig_layout.prom").write_text(gauge_file(config, 1))
            args = [a.replace(mounts[0]["mountPath"], str(host_dir)) for a in values["extraArgs"]]
            address = stack.enter_context(node_exporter(args, free_port(), tmp_path / f"{node}.log"))
            # kubernetes_sd's endpoints role sets __meta_kubernetes_pod_node_name for a pod's endpoint; static here
            targets.append({"targets": [address], "labels": {"__meta_kubernetes_pod_node_name": node}})
        job = {"job_name": "node-exporter", "scrape_interval": "1s", "static_configs": targets, "relabel_configs": relabel}
        prom: PrometheusProcess = stack.enter_context(prometheus_server(tmp_path / "prometheus", [job],
                                                                        rule_groups=prometheus_rule_groups(rendered["rule"])))
        got = wait_query(prom, "gpu_ops_mig_layout_matched", {node: 1.0 for node in NODES})
        assert got == {node: 1.0 for node in NODES}, (got, prom.targets_up())
        configs = {json.loads(k)["node"]: json.loads(k)["config"] for k in prom.query("gpu_ops_mig_layout_matched")}
        assert configs == NODES
        # dgx-a100-01 leaves its layout (the apply's rescue writes 0): the alert's expression names that node only
        (tmp_path / "dgx-a100-01/textfile/gpu_ops_mig_layout.prom").write_text(gauge_file(NODES["dgx-a100-01"], 0))
        alert = next(r for g in rendered["rule"]["spec"]["groups"] for r in g["rules"] if r.get("alert") == "GpuOpsMigLayoutMismatch")
        got = wait_query(prom, alert["expr"], {"dgx-a100-01": 0.0})
        assert got == {"dgx-a100-01": 0.0}, got
        # every dashboard query parses (Prometheus answers 400 otherwise), the layout panel returns a series per node
        # from the real node_exporter (tests/integration/test_dashboards.py checks what every query returns)
        layout = []
        for board in rendered["dashboards"]:
            assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
            dashboard = json.loads(next(iter(board["data"].values())))
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    result = prom.query(target["expr"])
                    if "gpu_ops_mig_layout_matched" in target["expr"]:
                        layout.append(target["expr"])
                        assert {json.loads(k)["node"] for k in result} == set(NODES), (panel["title"], result)
        assert len(layout) == 1, layout
        health = prom.rule_health()
        assert all(r["health"] in ("ok", "unknown") for r in health), [r for r in health if r["health"] not in ("ok", "unknown")]
