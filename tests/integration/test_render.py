# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/render.yml for real: every cluster object it writes is valid for Kubernetes 1.29, 1.31 and 1.33
(strict, CRDs against their own schemas), the Helm index and values are complete, a re-render changes
nothing, and bad input fails before anything is written. Run without network where the test can make a
network namespace (unshare -n), which proves no cluster and no network are contacted."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env, offline_prefix
    from tests.k8s_schemas import KUBE_VERSIONS, validate_file
    from tests.vault_vars import VAULT_ARGS
else:  # tests/k8s_schemas.py, importable by its file name once tests/ is on sys.path
    from ansible_run import ansible_env, offline_prefix
    from k8s_schemas import KUBE_VERSIONS, validate_file
    from vault_vars import VAULT_ARGS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

# Top-level keys of the nvidia-device-plugin chart's values.yaml (0.18 line), from NVIDIA/k8s-device-plugin
# deployments/helm/nvidia-device-plugin/values.yaml: our values must use only these (a misspelt key is
# silently ignored by Helm).
DEVICE_PLUGIN_CHART_KEYS = {
    "config", "compatWithCPUManager", "migStrategy", "failOnInitError", "deviceListStrategy", "deviceIDStrategy",
    "nvidiaDriverRoot", "gdrcopyEnabled", "gdsEnabled", "mofedEnabled", "deviceDiscoveryStrategy", "nameOverride",
    "fullnameOverride", "namespaceOverride", "selectorLabelsOverride", "componentSelectorLabels", "allowDefaultNamespace",
    "imagePullSecrets", "image", "updateStrategy", "podAnnotations", "podSecurityContext", "securityContext", "resources",
    "nodeSelector", "affinity", "tolerations", "priorityClassName", "runtimeClassName", "devicePlugin", "gfd", "nfd",
    "mps", "cdi",
}


def render(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(out.parent)
    argv = [*offline_prefix(), str(BIN / "ansible-playbook"), "playbooks/render.yml", "-i", "inventories/dgx", *VAULT_ARGS,
            "-e", f"gpu_ops_render_dir={out}", *extra]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("render") / "out"
    proc = render(out)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return out


def objects_files(out: Path) -> List[Path]:
    return sorted(p for p in out.rglob("*.yaml") if p.parent != out and not p.name.endswith(".values.yaml"))


def test_render_writes_one_object_per_file_grouped_by_role(rendered: Path) -> None:
    files = objects_files(rendered)
    assert [str(p.relative_to(rendered)) for p in files] == [
        "autoscaling/01-horizontalpodautoscaler-triton-1g-18gb.yaml",
        "autoscaling/02-horizontalpodautoscaler-triton-1g-5gb.yaml",
        "autoscaling/03-horizontalpodautoscaler-triton-2g-10gb.yaml",
        "autoscaling/04-horizontalpodautoscaler-triton-3g-20gb.yaml",
        "custom_metrics/01-prometheusrule-triton-queue-time.yaml",
        "gpu_plugins/01-namespace-nvidia-device-plugin.yaml",
        "gpu_plugins/02-configmap-dcgm-exporter-counters.yaml",
        "gpu_plugins/03-podmonitor-dcgm-exporter.yaml",
        "monitoring/01-namespace-monitoring.yaml",
        "monitoring_rules/01-prometheusrule-gpu-ops-serving.yaml",
        "monitoring_rules/02-configmap-gpu-ops-queue-time.yaml",
        "monitoring_rules/03-configmap-gpu-ops-replicas.yaml",
        "monitoring_rules/04-configmap-gpu-ops-requests.yaml",
        "monitoring_rules/05-configmap-gpu-ops-mig-utilisation.yaml",
        "monitoring_rules/06-configmap-gpu-ops-layout.yaml",
        "monitoring_secrets/01-secret-kube-prometheus-stack-grafana-admin.yaml",
        "nginx_lb/01-configmap-nginx-lb-config.yaml",
        "nginx_lb/02-networkpolicy-nginx-lb.yaml",
        "nginx_lb/03-deployment-nginx-lb.yaml",
        "nginx_lb/04-service-nginx-lb.yaml",
        "nginx_lb/05-service-nginx-lb-status.yaml",
        "nginx_lb/06-poddisruptionbudget-nginx-lb.yaml",
        "nginx_lb/07-podmonitor-nginx-lb.yaml",
        "triton/01-namespace-triton.yaml",
        "triton/02-networkpolicy-triton-default-deny.yaml",
        "triton/03-networkpolicy-triton-ingress.yaml",
        "triton/04-networkpolicy-triton-egress.yaml",
        "triton/05-deployment-triton-1g-18gb.yaml",
        "triton/06-poddisruptionbudget-triton-1g-18gb.yaml",
        "triton/07-service-triton-1g-18gb-headless.yaml",
        "triton/08-deployment-triton-1g-5gb.yaml",
        "triton/09-poddisruptionbudget-triton-1g-5gb.yaml",
        "triton/10-service-triton-1g-5gb-headless.yaml",
        "triton/11-deployment-triton-2g-10gb.yaml",
        "triton/12-poddisruptionbudget-triton-2g-10gb.yaml",
        "triton/13-service-triton-2g-10gb-headless.yaml",
        "triton/14-deployment-triton-3g-20gb.yaml",
        "triton/15-poddisruptionbudget-triton-3g-20gb.yaml",
        "triton/16-service-triton-3g-20gb-headless.yaml",
        "triton/17-service-triton.yaml",
        "triton/18-podmonitor-triton.yaml",
        "triton_secrets/01-secret-triton-restricted-api.yaml",
    ]
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1, path


def test_a_render_dir_given_with_dotdot_keeps_its_files(tmp_path: Path) -> None:
    """Regression: the stale-file sweep compared unnormalised paths and removed every file just written."""
    (tmp_path / "a").mkdir()
    proc = render(tmp_path / "a" / ".." / "out")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert (tmp_path / "out" / "gpu_plugins" / "01-namespace-nvidia-device-plugin.yaml").is_file()
    assert (tmp_path / "out" / "gpu_plugins" / "nvdp.values.yaml").is_file()


def test_every_object_is_valid_for_each_kubernetes_version(rendered: Path) -> None:
    assert KUBE_VERSIONS == ("1.29.0", "1.31.0", "1.33.0")
    total = sum(validate_file(path) for path in objects_files(rendered))
    assert total == len(objects_files(rendered))


def test_namespace_allows_the_privileged_device_plugin(rendered: Path) -> None:
    ns = yaml.safe_load((rendered / "gpu_plugins/01-namespace-nvidia-device-plugin.yaml").read_text())
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_helm_index_and_values(rendered: Path) -> None:
    index = yaml.safe_load((rendered / "helm-releases.yaml").read_text())
    # every role's releases in one index, sorted by release name; the device plugin's entry in full
    assert [(r["component"], r["release"]) for r in index["releases"]] == [
        ("gpu_plugins", "dcgm-exporter"), ("monitoring", "kube-prometheus-stack"), ("gpu_plugins", "nvdp"),
        ("custom_metrics", "prometheus-adapter")]
    for entry in index["releases"]:
        assert (rendered / entry["values_file"]).is_file(), entry
    assert {
        "releases": [r for r in index["releases"] if r["release"] == "nvdp"]
    } == {
        "releases": [
            {
                "release": "nvdp",
                "namespace": "nvidia-device-plugin",
                "repository": "https://nvidia.github.io/k8s-device-plugin",
                "chart": "nvidia-device-plugin",
                "version": "0.18.0",
                "values_file": "gpu_plugins/nvdp.values.yaml",
                "component": "gpu_plugins",
            }
        ]
    }
    values = yaml.safe_load((rendered / "gpu_plugins/nvdp.values.yaml").read_text())
    assert set(values) <= DEVICE_PLUGIN_CHART_KEYS, set(values) - DEVICE_PLUGIN_CHART_KEYS
    assert values["migStrategy"] == "mixed"
    assert values["gfd"] == {"enabled": True}
    # render mode cannot look for a running NFD: gpu_plugins_nfd_enabled auto deploys it, with the NodeFeature API
    assert values["nfd"] == {"enabled": True, "enableNodeFeatureApi": True, "master": {"config": {"extraLabelNs": ["nvidia.com"]}}}
    terms = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = [t["matchExpressions"][0]["key"] for t in terms]
    # with NFD (pci-10de), with the GPU Operator's label, and without either (our node role's mig.config label)
    assert keys == ["feature.node.kubernetes.io/pci-10de.present", "nvidia.com/gpu.present", "nvidia.com/mig.config"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]
    assert values["priorityClassName"] == "system-node-critical"


def test_capacity_report_from_the_inventory_layouts(rendered: Path) -> None:
    report = yaml.safe_load((rendered / "mig-capacity.yaml").read_text())
    assert report["strategy"] == "mixed"
    assert report["nodes"] == {
        "dgx-a100-01": {"nvidia.com/mig-1g.5gb": 56},
        "dgx-a100-02": {"nvidia.com/mig-1g.5gb": 16, "nvidia.com/mig-2g.10gb": 8, "nvidia.com/mig-3g.20gb": 8},
        "dgx-h200-01": {"nvidia.com/mig-1g.18gb": 56},
    }
    assert report["cluster"] == {
        "nvidia.com/mig-1g.18gb": 56,
        "nvidia.com/mig-1g.5gb": 72,
        "nvidia.com/mig-2g.10gb": 8,
        "nvidia.com/mig-3g.20gb": 8,
    }


def test_rerender_changes_nothing_removes_stale_files_and_keeps_the_users(rendered: Path) -> None:
    # a file an earlier render wrote (listed in the record with what it wrote) that this render no longer produces
    content = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: left-over\n"
    stale = rendered / "gpu_plugins" / "09-configmap-left-over.yaml"
    stale.write_text(content)
    record = json.loads((rendered / ".gpu_ops-rendered").read_text())
    record["components"]["gpu_plugins"][stale.name] = hashlib.sha1(content.encode()).hexdigest()  # the record's digest
    (rendered / ".gpu_ops-rendered").write_text(json.dumps(record))
    # the user's own file beside the manifests, which no render wrote
    users = rendered / "gpu_plugins" / "sealedsecret-pull.yaml"
    users.write_text("---\napiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata:\n  name: pull\n")
    proc = render(rendered)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert not stale.exists()
    assert users.read_text().endswith("name: pull\n")
    proc = render(rendered)
    assert proc.returncode == 0
    assert "changed=0" in proc.stdout, proc.stdout[-3000:]
    assert users.is_file()
    users.unlink()


def _fails_before_writing(tmp_path: Path, extra: List[str], message: str) -> None:
    out = tmp_path / "out"
    proc = render(out, *extra)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-4000:]
    assert not out.exists() or not any(out.rglob("*")), "nothing may be written on bad input"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-e", "gpu_ops_mig_strategy=none"], "value of gpu_ops_mig_strategy must be one of: mixed, single, got: none"),
        (["-e", "gpu_ops_mig_strategy=single"], "mig_fleet: GPU node dgx-a100-02: strategy 'single' needs one MIG profile on every GPU"),
        (["-e", "gpu_plugins_chart_version=0.18"], "gpu_plugins_chart_version: '0.18' is not an exact chart version such as 1.2.3"),
        (["-e", "gpu_plugins_chart_version=latest"], "'latest' is not an exact chart version"),
        (["-e", "gpu_plugins_chart_version=>=0.17.0"], "'>=0.17.0' is not an exact chart version"),
        (["-e", "gpu_plugins_chart_repository=ftp://mirror/charts"], "is not an https:// or oci:// chart repository"),
    ],
)
def test_bad_input_fails_before_anything_is_written(tmp_path: Path, extra: List[str], message: str) -> None:
    _fails_before_writing(tmp_path, extra, message)


def test_unrealisable_layout_fails_naming_node(tmp_path: Path) -> None:
    inventory = yaml.safe_load((ROOT / "inventories/dgx/hosts.yml").read_text())
    hosts: Dict[str, Dict[str, object]] = inventory["all"]["children"]["gpu_nodes"]["hosts"]
    hosts["dgx-h200-01"]["mig_layout_config"] = "all-1g.5gb"  # an A100 layout on an H200
    inv_dir = tmp_path / "inv"
    shutil.copytree(ROOT / "inventories/dgx", inv_dir)
    shutil.copytree(ROOT / "inventories/layouts", tmp_path / "layouts")
    (inv_dir / "hosts.yml").write_text(yaml.safe_dump(inventory))
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", HOME=str(tmp_path))
    out = tmp_path / "out"
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "playbooks/render.yml", "-i", str(inv_dir), *VAULT_ARGS, "-e", f"gpu_ops_render_dir={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode != 0
    assert "node dgx-h200-01: config 'all-1g.5gb': GPU 0 (NVIDIA H200, 0x233510DE) is not covered by any entry" in proc.stdout
    assert not out.exists()
