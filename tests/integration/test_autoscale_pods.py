# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/autoscale/pods.py with real pods: the role triton's Deployment (rendered by playbooks/serving.yml --tags
triton, with 1 s probe periods and a 2 s preStop so that the test is short), real tritonservers on 127.0.0.N and a
real dnsmasq standing for the headless Service's DNS.

Scale 1 -> 2 -> 1, with a thread querying the DNS every 20 ms throughout: a pod is in DNS only after the kubelet's
readiness probe found it ready (never before its pod_ready), the ReplicaSet removes the pod that has been ready the
shortest time, which leaves DNS while its Triton still serves, and only then gets its preStop sleep, then SIGTERM; at
the end nothing of any pod runs.
"""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Tuple

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.autoscale.pods import Deployment
    from tests.servers.dnsmasq import dnsmasq_server, query_a
    from tests.servers.processes import group_members
    from tests.servers.triton import ensure_triton_venv, write_model_repository
    from tests.vault_vars import VAULT_ARGS
else:
    from ansible_run import ansible_env
    from autoscale.pods import Deployment
    from servers.dnsmasq import dnsmasq_server, query_a
    from servers.processes import group_members
    from servers.triton import ensure_triton_venv, write_model_repository
    from vault_vars import VAULT_ARGS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
POOL = "triton-1g-5gb"  # one of the example inventory's serving pools: its Deployment and headless Service
FQDN = f"{POOL}-headless.triton.svc.cluster.local"
PRESTOP_S = 2
READY_WITHIN_S = 45.0


def render(out: Path) -> Dict[str, Any]:
    env = ansible_env(out.parent)
    argv = [str(BIN / "ansible-playbook"), "playbooks/serving.yml", "--tags", "triton", "-i", "inventories/dgx", *VAULT_ARGS,
            "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}", "-e", "ansible_connection=local",
            "-e", f"ansible_python_interpreter={sys.executable}", "-e", f"triton_prestop_sleep_seconds={PRESTOP_S}",
            "-e", "triton_startup_probe_period=1", "-e", "triton_readiness_probe_period=1"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    [path] = (out / "triton").glob(f"*-deployment-{POOL}.yaml")
    deployment = yaml.safe_load(path.read_text())
    secret = yaml.safe_load(next((out / "triton_secrets").glob("*-secret-triton-restricted-api.yaml")).read_text())
    return {"deployment": deployment, "secret": secret}


class DnsWatch:
    """Queries the Service's name every 20 ms: (time before the query, time after the answer, addresses)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.samples: List[Tuple[float, float, List[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 240
        while not self._stop.is_set() and time.monotonic() < deadline:
            before = time.monotonic()
            try:
                answer = query_a(FQDN, self.host, self.port, timeout=0.5)
            except RuntimeError:  # REFUSED: no address at all (dnsmasq has no upstream to ask)
                answer = []
            except OSError:
                continue
            self.samples.append((before, time.monotonic(), answer))
            self._stop.wait(0.02)

    def __enter__(self) -> DnsWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def wait_seen(self, address: str, timeout: float = 5.0) -> bool:
        """Until a sample taken by this watch answered with ``address`` (the watch samples every 20 ms: the test's own
        query may come before its next one)."""
        deadline = time.monotonic() + timeout
        while not any(address in answer for _before, _after, answer in list(self.samples)):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def first_seen(self, address: str) -> float:
        return min(after for _before, after, answer in self.samples if address in answer)

    def last_seen(self, address: str) -> float:
        return max(before for before, _after, answer in self.samples if address in answer)


def serves(address: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/v2/health/ready", timeout=2) as resp:
            return int(resp.status) == 200
    except OSError:
        return False


def only(times: List[float], what: str) -> float:
    assert len(times) == 1, (what, times)
    return times[0]


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Tuple[Deployment, Any]]:
    ensure_triton_venv()
    rendered = render(tmp_path / "render")
    repo = write_model_repository(tmp_path / "models", delay_ms=0)
    with dnsmasq_server(tmp_path / "dns", {}) as dns:  # the Service before its pods: no address (NXDOMAIN)
        deployment = Deployment(rendered["deployment"], repo, dns=dns, fqdn=FQDN, log_dir=tmp_path / "pods",
                                secrets=[rendered["secret"]], max_pods=3)
        try:
            yield deployment, dns
        finally:
            deployment.close()


def test_scale_up_publishes_ready_pods_and_scale_down_leaves_dns_before_sigterm(bed: Tuple[Deployment, Any]) -> None:
    deployment, dns = bed
    assert deployment.startup_probe is not None
    assert deployment.readiness_probe is not None
    assert (deployment.startup_probe.period_s, deployment.readiness_probe.period_s) == (1.0, 1.0)
    assert (deployment.prestop_s, deployment.grace_s) == (PRESTOP_S, 60.0)
    # the rendered restricted-API arguments reached Triton with the Secret's key substituted
    assert any(a.startswith("--http-restricted-api=") and "$(" not in a for a in deployment.args)
    port = deployment.http_port
    with DnsWatch(dns.host, dns.port) as watch:
        deployment.scale(1)
        assert deployment.wait_until(lambda d: len(d.ready_addresses()) == 1 and all(p.in_dns for p in d.pods()), READY_WITHIN_S), deployment.events
        first = deployment.pods()[0]
        assert first.address is not None
        assert query_a(FQDN, dns.host, dns.port) == [first.address]

        deployment.scale(2)
        assert deployment.wait_until(lambda d: len(d.ready_addresses()) == 2 and all(p.in_dns for p in d.pods()), READY_WITHIN_S), deployment.events
        second = next(p for p in deployment.pods() if p.name != first.name)
        assert second.address is not None
        assert query_a(FQDN, dns.host, dns.port) == sorted([first.address, second.address])

        # neither pod was in DNS before its readiness probe passed, and each was started before
        for pod in (first, second):
            assert pod.address is not None
            started = only(deployment.event_times("pod_started", pod.name), "pod_started")
            ready = only(deployment.event_times("pod_ready", pod.name), "pod_ready")
            in_dns = only(deployment.event_times("pod_in_dns", pod.name), "pod_in_dns")
            assert started < ready <= in_dns
            assert watch.wait_seen(pod.address), (pod.name, watch.samples[-3:])
            assert watch.first_seen(pod.address) > ready, (pod.name, watch.first_seen(pod.address), ready)
            # the first real probe comes one period after the start: never sooner
            assert ready - started >= 1.0

        # scale down: the pod ready for the shorter time goes (ActivePodsWithRanks); it leaves DNS while it still serves
        deployment.scale(1)
        assert deployment.wait_until(lambda d: bool(d.event_times("pod_removed_from_dns", second.name)), 15), deployment.events
        assert query_a(FQDN, dns.host, dns.port) == [first.address]
        assert serves(second.address, port), "the removed pod must still serve during its preStop"
        assert deployment.wait_until(lambda d: bool(d.event_times("pod_stopped", second.name)), 30), deployment.events

    order = ["pod_terminating", "pod_removed_from_dns", "prestop_started", "prestop_finished", "sigterm", "pod_stopped"]
    times = [only(deployment.event_times(name, second.name), name) for name in order]
    assert times == sorted(times), list(zip(order, times, strict=True))
    assert times[3] - times[2] >= PRESTOP_S - 0.05  # the rendered preStop sleep ran in full
    assert not deployment.event_times("sigkill", second.name)  # Triton exits on SIGTERM within the grace period
    assert watch.last_seen(second.address) < times[1], "answered with the removed pod after its removal"
    assert not deployment.event_times("pod_terminating", first.name)
    assert [p.name for p in deployment.pods()] == [first.name]
    assert not serves(second.address, port)

    pids = [int(e["detail"].split()[1]) for e in deployment.events if e["event"] == "pod_started"]
    assert len(pids) == 2
    deployment.close()
    assert [pid for pid in pids if group_members(pid)] == []
    assert not serves(first.address, port)
    assert deployment.pods() == [] or all(p.phase == "Terminating" for p in deployment.pods())


def test_a_service_without_ready_pods_has_no_address_and_dnsmasq_survives_a_sighup_at_once(tmp_path: Path) -> None:
    # dnsmasq_server returns only once dnsmasq answers (its SIGHUP handler installed), even with no record at all; a
    # name of the cluster domain without an address is NXDOMAIN (as from CoreDNS), not REFUSED
    with dnsmasq_server(tmp_path / "dns", {}) as dns:
        dns.set_records({FQDN: []})
        assert query_a(FQDN, dns.host, dns.port) == []
        dns.set_records({FQDN: ["127.0.0.31"]})
        assert query_a(FQDN, dns.host, dns.port) == ["127.0.0.31"]
        assert dns.proc is not None
        assert dns.proc.poll() is None


class FailingDns:
    """The dnsmasq process as the Deployment uses it, whose set_records raises once ``fail`` is set."""

    def __init__(self, dns: Any) -> None:
        self.dns = dns
        self.fail = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.dns, name)

    def set_records(self, records: Any, *, wait: bool = True) -> None:
        if self.fail.is_set():
            raise RuntimeError("set_records failed (injected)")
        self.dns.set_records(records, wait=wait)


def test_close_stops_every_pod_even_when_its_kubelet_thread_raised(tmp_path: Path) -> None:
    ensure_triton_venv()
    rendered = render(tmp_path / "render")
    repo = write_model_repository(tmp_path / "models", delay_ms=0)
    with dnsmasq_server(tmp_path / "dns", {}) as real_dns:
        dns = FailingDns(real_dns)
        deployment = Deployment(rendered["deployment"], repo, dns=dns, fqdn=FQDN, log_dir=tmp_path / "pods",  # type: ignore[arg-type]
                                secrets=[rendered["secret"]], max_pods=3)
        try:
            deployment.scale(1)
            assert deployment.wait_until(lambda d: len(d.ready_addresses()) == 1 and all(p.in_dns for p in d.pods()), READY_WITHIN_S), deployment.events
            # from now on publishing fails: the second pod's kubelet thread raises when it turns ready, and removing it
            # from DNS fails again in its termination
            dns.fail.set()
            deployment.scale(2)
            assert deployment.wait_until(lambda d: any(e["event"] == "pod_error" for e in d.events), READY_WITHIN_S), deployment.events
            pids = [int(e["detail"].split()[1]) for e in deployment.events if e["event"] == "pod_started"]
            assert len(pids) == 2
        finally:
            deployment.close()
        assert [pid for pid in pids if group_members(pid)] == [], deployment.events
