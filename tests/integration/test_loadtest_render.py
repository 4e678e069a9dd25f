# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/loadtest.yml in render mode (the sandbox inventory, which also turns the triton role's demo model on):
the Job and the demo model's objects are valid for each Kubernetes version in KUBE_VERSIONS, the Job's pod meets Pod
Security "restricted" (the namespace's level), the script the Job runs, executed by bash with a stand-in perf_analyzer,
prints what the sampling module parses back into steps, and bad input fails in preflight naming the variable, before
anything is written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import pytest
import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._loadtest_sample import build_run, parse_job_log
from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils._loadtest_report import PERF_COLUMNS, validate_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.k8s_schemas import KUBE_VERSIONS, validate_file
    from tests.kube_fake import admission as psa
else:
    from ansible_run import ansible_env
    from k8s_schemas import KUBE_VERSIONS, validate_file
    from kube_fake import admission as psa

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def run_playbook(out: Path, playbook: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(out.parent)
    argv = [str(BIN / "ansible-playbook"), playbook, "-i", "inventories/sandbox", "-e", f"gpu_ops_render_dir={out}", *extra]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def documents(out: Path, component: str) -> Dict[str, Dict[str, Any]]:
    found: Dict[str, Dict[str, Any]] = {}
    for path in sorted((out / component).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("loadtest-render") / "out"
    proc = run_playbook(out, "playbooks/loadtest.yml")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert "Run the load test" in proc.stdout
    assert "skipping" in proc.stdout
    # the serving stage of the sandbox: role triton with the demo model
    proc = run_playbook(out, "playbooks/serving.yml", "-e", "vault_grafana_admin_password=render-test-grafana-Pa55",
                        "-e", "vault_triton_restricted_api_key=render-test-triton-key-0123456789")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return out


def test_job_and_demo_model_are_valid_for_each_kubernetes_version(rendered: Path) -> None:
    assert KUBE_VERSIONS == ("1.29.0", "1.31.0", "1.33.0")
    files = sorted((rendered / "loadtest").glob("*.yaml")) + sorted((rendered / "triton").glob("*.yaml"))
    assert [p.name for p in (rendered / "loadtest").glob("*.yaml")] == ["01-job-triton-loadtest.yaml"]
    assert sum(validate_file(p) for p in files) == len(files)


def test_job_pod_meets_pod_security_restricted(rendered: Path) -> None:
    job = documents(rendered, "loadtest")["Job/triton-loadtest"]
    template = psa.pod_template("Job", job)
    assert template is not None
    policy, errors = psa.policy_to_evaluate({"pod-security.kubernetes.io/enforce": "restricted"})
    assert errors == []
    assert psa.evaluate(policy.enforce, template[0], template[1]) == []
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    container = spec["template"]["spec"]["containers"][0]
    # the SDK image of the Triton release the triton role serves (24.10-py3 -> 24.10-py3-sdk), in every serving pool
    images = {d["spec"]["template"]["spec"]["containers"][0]["image"] for d in pool_deployments(rendered).values()}
    assert [container["image"]] == [image + "-sdk" for image in images]


def pool_deployments(rendered: Path) -> Dict[str, Dict[str, Any]]:
    """The serving pools' Deployments (one per MIG profile of the sandbox's layouts, role triton)."""
    found = {k: v for k, v in documents(rendered, "triton").items() if k.startswith("Deployment/")}
    assert len(found) >= 1
    assert all("gpu-ops.io/serving-pool" in d["spec"]["selector"]["matchLabels"] for d in found.values())
    return found


@pytest.mark.parametrize("index", [0, -1])
def test_demo_model_objects(rendered: Path, index: int) -> None:
    objs = documents(rendered, "triton")
    config_map = objs["ConfigMap/triton-demo-model"]
    assert set(config_map["data"]) == {"config.pbtxt", "model.py"}
    assert 'name: "demo"' in config_map["data"]["config.pbtxt"]
    assert 'backend: "python"' in config_map["data"]["config.pbtxt"]
    pod = list(pool_deployments(rendered).values())[index]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert [a for a in args if a.startswith("--model-repository=")] == ["--model-repository=/models", "--model-repository=/demo-models"]
    volume = next(v for v in pod["volumes"] if v["name"] == "demo-model")
    assert volume["configMap"] == {"name": "triton-demo-model", "items": [{"key": "config.pbtxt", "path": "config.pbtxt"},
                                                                          {"key": "model.py", "path": "1/model.py"}]}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "demo-model")
    assert mount == {"name": "demo-model", "mountPath": "/demo-models/demo", "readOnly": True}
    # the ConfigMap is applied before the Deployment that mounts it
    names = sorted(p.name for p in (rendered / "triton").glob("*.yaml"))
    assert names.index(next(n for n in names if "configmap" in n)) < names.index(next(n for n in names if "deployment" in n))


STUB = """#!/bin/bash
# A stand-in for perf_analyzer: takes its options as perf_analyzer documents them (docs/cli.md: -m, -i, -u,
# --concurrency-range start:end, -f FILE), writes a -f CSV with perf_analyzer's header and one row for the concurrency,
# and exits as perf_analyzer does: 0 when it measured, non-zero when not (here: concurrency 8 over grpc fails, no CSV).
csv="" proto="" conc=""
while [ $# -gt 0 ]; do
  case "$1" in
    -f) csv="$2"; shift 2;;
    -i) proto="$2"; shift 2;;
    --concurrency-range) conc="${2%%:*}"; shift 2;;
    *) shift;;
  esac
done
echo "$@" >> "$STUB_ARGS"
sleep "${STUB_SECONDS:-0}"  # how long a measurement takes (0 here; the kube_fake run lets steps last a moment)
if [ "$proto" = grpc ] && [ "$conc" = 8 ]; then echo "Failed to obtain stable measurement." >&2; exit 2; fi
{ echo "HEADER"; echo "$conc,$((conc * 100)).5,10,20,300,1,2000,1,5,2100,2200,2300,2400"; } > "$csv"
"""


def test_the_jobs_script_prints_what_the_module_parses(rendered: Path, tmp_path: Path) -> None:
    job = documents(rendered, "loadtest")["Job/triton-loadtest"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["/bin/bash", "-c"]
    script = container["args"][0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "perf_analyzer"
    stub.write_text(STUB.replace("HEADER", ",".join(PERF_COLUMNS)))
    stub.chmod(0o755)
    # the container's /tmp is an emptyDir; here a directory of the test's
    script = script.replace("/tmp/perf.csv", str(tmp_path / "perf.csv"))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_ARGS": str(tmp_path / "args")}
    proc = subprocess.run(["/bin/bash", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # a failed step fails the Job
    steps = parse_job_log(proc.stdout, started=0.0)
    assert [(s["protocol"], s["concurrency"], s["rc"]) for s in steps] == [
        *[("http", c, 0) for c in (1, 2, 4, 8, 16, 4)], *[("grpc", c, 2 if c == 8 else 0) for c in (1, 2, 4, 8, 16, 4)]]
    assert steps[0]["perf"]["Inferences/Second"] == 100.5
    assert steps[4]["perf"]["Concurrency"] == 16.0
    assert steps[9]["perf"] == {}  # no CSV from the failed step
    assert all(s["end"] >= s["start"] > 0 for s in steps)
    run = build_run(title="t", started_iso="2026-01-31T12:00:00Z", started=steps[0]["start"] - 1.0,
                    samples=[{"t": 0.0, "hpa_current": 1, "hpa_desired": 1, "metric_us": 10.0, "queue_us": {}, "requests": {}, "ready_pods": 1}],
                    log_text=proc.stdout, settings={"model": "demo", "metric": "avg_time_queue_us"},
                    hpa={"target_queue_us": 2000.0, "min_replicas": 1, "max_replicas": 7})
    assert validate_run(run) == [], validate_run(run)
    assert len(run["steps"]) == 11
    assert [s["concurrency"] for s in run["unmeasured_steps"]] == [8]
    assert run["perf_failures"] == ["grpc concurrency 8: perf_analyzer exited 2"]
    # perf_analyzer got the model, protocol, URL and one concurrency per run
    first = (tmp_path / "args").read_text().splitlines()
    assert len(first) == 12


@pytest.mark.parametrize(("extra", "message"), [
    (["-e", '{"loadtest_concurrency": [0, 4]}'], "loadtest_concurrency must list concurrency levels from 1 to 1024"),
    (["-e", "loadtest_step_seconds=5"], "loadtest_step_seconds"),
    (["-e", '{"loadtest_model": "bad name"}'], "loadtest_model"),
    (["-e", "loadtest_image_tag=latest"], "loadtest_image_tag must be an explicit NGC release"),
    (["-e", "loadtest_prometheus_url=http://prometheus.example.com:9090"], "loadtest_prometheus_url (gpu_ops_prometheus_url)"),
    (["-e", '{"loadtest_protocols": ["http", "http"]}'], "loadtest_protocols must list http and/or grpc, each once"),
    (["-e", '{"loadtest_pools": ["triton-1g-5gb", "Triton_3g"]}'], "loadtest_pools must list serving pools by their Deployments' names"),
])
def test_bad_input_fails_in_preflight_naming_the_variable(tmp_path: Path, extra: List[str], message: str) -> None:
    out = tmp_path / "out"
    proc = run_playbook(out, "playbooks/loadtest.yml", *extra)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert not (out / "loadtest").exists()
