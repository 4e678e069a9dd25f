# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The triton role's demo model (triton_demo_model: true) in a real Triton (the CPU tritonserver of tests/servers/triton.py):
the rendered ConfigMap's config.pbtxt and model.py, laid out as the kubelet lays out a configMap volume with items, and
tritonserver started with the rendered Deployment's arguments (two --model-repository, the site's one empty). Proven: the
model is READY, it is the only model (the volume's hidden ..data entries are not taken for models), and an inference over
HTTP returns its input; requests wait their turn (one instance, the configured delay)."""
from __future__ import annotations

import concurrent.futures
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Tuple

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.servers.processes import PortTaken
    from tests.servers.triton import TritonProcess, container_env, free_port, kube_expand, triton_server_args
else:
    from ansible_run import ansible_env
    from servers.processes import PortTaken
    from servers.triton import TritonProcess, container_env, free_port, kube_expand, triton_server_args

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DELAY_MS = 50
START_ATTEMPTS = 3

pytestmark = pytest.mark.slow


def render(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(out.parent)
    argv = [str(BIN / "ansible-playbook"), "playbooks/serving.yml", "-i", "inventories/sandbox", "-e", f"gpu_ops_render_dir={out}",
            "-e", "vault_grafana_admin_password=demo-test-grafana-Pa55", *extra]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def load(path: Path) -> Dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert len(docs) == 1, path
    return dict(docs[0])


def project_config_map(config_map: Mapping[str, Any], items: List[Mapping[str, str]], mount: Path) -> None:
    """A configMap volume with ``items`` as the kubelet writes it (kubernetes pkg/volume/util/atomic_writer.go,
    AtomicWriter.Write): the files in a hidden timestamped directory ``..<timestamp>``, a symlink ``..data`` to it, and
    for each first path segment of the items a symlink in the volume's root to ``..data/<segment>``."""
    payload = mount / "..2026_01_31_12_00_00.000000001"
    for item in items:
        target = payload / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config_map["data"][item["key"]])
    (mount / "..data").symlink_to(payload.name)
    for first in sorted({item["path"].split("/")[0] for item in items}):
        (mount / first).symlink_to(f"..data/{first}")


def named(items: List[Dict[str, Any]], name: str) -> Dict[str, Any]:
    return next(item for item in items if item["name"] == name)


class Bed:
    def __init__(self, out: Path, key: str) -> None:
        self.key = key
        self.deployment = load(next((out / "triton").glob("*-deployment-triton-1g-5gb.yaml")))
        self.config_map = load(next((out / "triton").glob("*-configmap-triton-demo-model.yaml")))
        self.secret = load(next((out / "triton_secrets").glob("*-secret-triton-restricted-api.yaml")))
        self.pod = self.deployment["spec"]["template"]["spec"]
        self.container: Dict[str, Any] = self.pod["containers"][0]

    def args(self) -> List[str]:
        env = container_env(self.container, [self.secret], self.deployment["metadata"]["namespace"])
        return [kube_expand(a, env) for a in self.container["args"]]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[Bed, TritonProcess]]:
    base = tmp_path_factory.mktemp("demo-model")
    key = secrets.token_urlsafe(24)
    failures: List[str] = []
    for attempt in range(START_ATTEMPTS):
        out, root = base / f"out{attempt}", base / f"root{attempt}"
        (root / "models").mkdir(parents=True)  # the site's repository, still empty on a fresh cluster
        ports = [free_port() for _index in range(3)]
        proc = render(out, "-e", f"triton_http_port={ports[0]}", "-e", f"triton_grpc_port={ports[1]}", "-e", f"triton_metrics_port={ports[2]}",
                      "-e", f"triton_model_mount_path={root / 'models'}", "-e", f"triton_demo_model_mount_path={root / 'demo-models'}",
                      "-e", f"triton_demo_model_delay_ms={DELAY_MS}", "-e", f"vault_triton_restricted_api_key={key}")
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        made = Bed(out, key)
        # the volume at the container's mount path, as the kubelet makes it
        mount, volume = named(made.container["volumeMounts"], "demo-model"), named(made.pod["volumes"], "demo-model")
        assert volume["configMap"]["name"] == made.config_map["metadata"]["name"]
        target = Path(mount["mountPath"])
        target.mkdir(parents=True)
        project_config_map(made.config_map, volume["configMap"]["items"], target)
        try:
            with triton_server_args(made.args(), base) as server:
                yield made, server
                return
        except PortTaken:
            failures.append(f"attempt {attempt}: a port of {ports} was taken")
    pytest.fail("; ".join(failures))


def test_the_demo_model_is_the_only_ready_model(bed: Tuple[Bed, TritonProcess]) -> None:
    made, server = bed
    assert sum(a.startswith("--model-repository=") for a in made.args()) == 2
    status, index = server.call("POST", "/v2/repository/index", {}, {"triton-admin-key": made.key})
    assert status == 200, index
    assert index == [{"name": "demo", "version": "1", "state": "READY"}]


def test_an_inference_returns_its_input(bed: Tuple[Bed, TritonProcess]) -> None:
    _made, server = bed
    status, meta = server.call("GET", "/v2/models/demo")
    assert status == 200, meta
    assert meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [16]}]
    data = [float(i) / 2 for i in range(16)]
    status, answer = server.call("POST", "/v2/models/demo/infer", {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [16], "data": data}]})
    assert status == 200, answer
    assert answer["outputs"][0]["name"] == "OUTPUT0"
    assert answer["outputs"][0]["data"] == data


def test_concurrent_requests_queue(bed: Tuple[Bed, TritonProcess]) -> None:
    """One instance, DELAY_MS per request: 6 requests sent at once take about 6 x DELAY_MS, not one DELAY_MS."""
    _made, server = bed
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [16], "data": [0.0] * 16}]}
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _i: server.call("POST", "/v2/models/demo/infer", body)[0], range(6)))
    elapsed = time.monotonic() - started
    assert results == [200] * 6
    assert elapsed >= 6 * DELAY_MS / 1000.0 * 0.9, elapsed
