# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Role gpu_plugins' dcgm-exporter in render mode (playbooks/render.yml --tags gpu_plugins on inventories/dgx): the
release values use only the chart's keys, select the GPU nodes whose label is "true", mount our counters; the counters
are the MIG-capable profiling fields without DCGM_FI_DEV_GPU_UTIL; the ConfigMap and PodMonitor are valid for 1.29,
1.31 and 1.33 and the PodMonitor selects the chart's pods with the labels Prometheus selects by; the opt-out renders
none of it; bad input fails before anything is written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.k8s_schemas import validate_file
    from tests.vault_vars import VAULT_ARGS
else:
    from ansible_run import ansible_env
    from k8s_schemas import validate_file
    from vault_vars import VAULT_ARGS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

# Top-level keys of the dcgm-exporter chart's values.yaml (4.x line), NVIDIA/dcgm-exporter deployment/values.yaml, and
# the keys its templates read beyond them (priorityClassName, hostNetwork in templates/daemonset.yaml): a misspelt key
# is silently ignored by Helm.
DCGM_CHART_KEYS = {
    "image", "arguments", "imagePullSecrets", "nameOverride", "fullnameOverride", "namespaceOverride", "runtimeClassName",
    "serviceAccount", "rollingUpdate", "podLabels", "podAnnotations", "podSecurityContext", "securityContext", "service",
    "resources", "serviceMonitor", "nodeSelector", "tolerations", "affinity", "extraHostVolumes", "extraConfigMapVolumes",
    "extraVolumeMounts", "extraEnv", "kubeletPath", "tlsServerConfig", "basicAuth", "kubernetes", "customMetrics",
    "priorityClassName", "hostNetwork",
}


def render(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(out.parent)
    argv = [str(BIN / "ansible-playbook"), "playbooks/render.yml", "-i", "inventories/dgx", *VAULT_ARGS, "--tags", "gpu_plugins",
            "-e", f"gpu_ops_render_dir={out}", *extra]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dcgm") / "out"
    proc = render(out)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return out


def test_release_and_values(rendered: Path) -> None:
    index = yaml.safe_load((rendered / "helm-releases.yaml").read_text())
    entry = next(r for r in index["releases"] if r["release"] == "dcgm-exporter")
    assert entry == {"release": "dcgm-exporter", "namespace": "nvidia-device-plugin", "repository": "https://nvidia.github.io/dcgm-exporter/helm-charts",
                     "chart": "dcgm-exporter", "version": "4.8.4", "values_file": "gpu_plugins/dcgm-exporter.values.yaml", "component": "gpu_plugins"}
    values = yaml.safe_load((rendered / entry["values_file"]).read_text())
    assert set(values) <= DCGM_CHART_KEYS, set(values) - DCGM_CHART_KEYS
    assert values["nodeSelector"] == {"gpu-ops.io/dcgm-exporter": "true"}
    nvdp = yaml.safe_load((rendered / "gpu_plugins/nvdp.values.yaml").read_text())
    assert values["affinity"] == nvdp["affinity"]
    assert values["tolerations"] == nvdp["tolerations"]
    assert values["arguments"] == ["-f", "/etc/dcgm-exporter/gpu-ops-counters.csv"]
    mount = values["extraVolumeMounts"][0]
    volume = values["extraConfigMapVolumes"][0]
    assert mount["name"] == volume["name"]
    assert mount["mountPath"] == values["arguments"][1]
    assert volume["configMap"]["name"] == "dcgm-exporter-counters"
    assert volume["configMap"]["items"] == [{"key": "counters.csv", "path": mount["subPath"]}]
    assert values["kubeletPath"] == "/var/lib/kubelet/pod-resources"
    assert "SYS_ADMIN" in values["securityContext"]["capabilities"]["add"]
    assert values["serviceMonitor"] == {"enabled": False}


def test_counters_pod_monitor_and_schemas(rendered: Path) -> None:
    files = sorted(p.name for p in (rendered / "gpu_plugins").glob("0*.yaml"))
    assert files == ["01-namespace-nvidia-device-plugin.yaml", "02-configmap-dcgm-exporter-counters.yaml", "03-podmonitor-dcgm-exporter.yaml"]
    for name in files:
        assert validate_file(rendered / "gpu_plugins" / name) == 1
    namespace = yaml.safe_load((rendered / "gpu_plugins" / files[0]).read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"  # SYS_ADMIN, hostPath
    counters = yaml.safe_load((rendered / "gpu_plugins" / files[1]).read_text())["data"]["counters.csv"]
    rows = [line.split(", ") for line in counters.splitlines() if line and not line.startswith("#")]
    fields = [row[0] for row in rows]
    assert {"DCGM_FI_PROF_GR_ENGINE_ACTIVE", "DCGM_FI_PROF_SM_ACTIVE", "DCGM_FI_PROF_SM_OCCUPANCY", "DCGM_FI_PROF_DRAM_ACTIVE",
            "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"} <= set(fields)
    assert "DCGM_FI_DEV_GPU_UTIL" not in fields
    assert all(len(row) == 3 and row[1] in ("gauge", "counter", "label") for row in rows), rows
    monitor = yaml.safe_load((rendered / "gpu_plugins" / files[2]).read_text())
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # gpu_ops_monitor_labels, which Prometheus selects by
    # the chart's selector labels (deployment/templates/_helpers.tpl dcgm-exporter.selectorLabels)
    assert monitor["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter", "app.kubernetes.io/instance": "dcgm-exporter"}}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_opt_out_renders_no_exporter(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = render(out, "-e", "gpu_plugins_dcgm_exporter_enabled=false")
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert sorted(p.name for p in (out / "gpu_plugins").iterdir()) == ["01-namespace-nvidia-device-plugin.yaml", "nvdp.values.yaml"]
    assert [r["release"] for r in yaml.safe_load((out / "helm-releases.yaml").read_text())["releases"]] == ["nvdp"]


@pytest.mark.parametrize(("extra", "message"), [
    (["-e", "gpu_plugins_dcgm_exporter_chart_version=4.8"], "gpu_plugins_dcgm_exporter_chart_version: '4.8' is not an exact chart version"),
    (["-e", '{"gpu_plugins_dcgm_exporter_counters": [{"field": "GPU_UTIL", "type": "gauge", "help": "x"}]}'],
     "gpu_plugins_dcgm_exporter_counters: GPU_UTIL is not a DCGM field name"),
    (["-e", '{"gpu_plugins_dcgm_exporter_node_label": "bad label"}'], "gpu_plugins_dcgm_exporter_node_label 'bad label' is not a node label key"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path: Path, extra: List[str], message: str) -> None:
    out = tmp_path / "out"
    proc = render(out, *extra)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-4000:]
    assert not (out / "gpu_plugins").exists()
