# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The serving_verify module with kubernetes.core's authentication options, against tests/kube_fake (HTTPS on loopback):
options and K8S_AUTH_* variables reach the API server through the kubernetes client, and the action group
gpu_ops.mig_serving.k8s gives one module_defaults entry to kubernetes.core's modules and serving_verify.
The checks themselves: tests/unit/plugins/module_utils/test_serving_verify.py and tests/integration/test_e2e_verify.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator

import pytest
import yaml
from mig_module_harness import FakeNode, ModuleExit

from ansible_collections.gpu_ops.mig_serving.plugins.modules import serving_verify

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests"))
if TYPE_CHECKING:  # mypy names tests/kube_fake "tests.kube_fake" (tests/ is not on mypy_path)
    from tests.kube_fake import FakeKube
else:
    from kube_fake import FakeKube

DEPLOYMENT = "/apis/apps/v1/namespaces/triton/deployments/triton"
NOT_FOUND = "Deployment triton/triton not found (is the serving stack deployed? playbooks/serving.yml)"


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


@pytest.fixture(autouse=True)
def no_k8s_auth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("K8S_AUTH_")]:
        monkeypatch.delenv(name)


def _run(run_module: Callable[..., ModuleExit], kube: FakeKube, **args: Any) -> ModuleExit:
    kube.clear_requests()
    return run_module(serving_verify.main, {"hpa_name": "", "check_lb_address": False, "retries": 0, **args}, FakeNode({}))


def test_kubeconfig_option_reaches_the_api_server(run_module: Any, kube: FakeKube) -> None:
    res = _run(run_module, kube, kubeconfig=str(kube.kubeconfig_path))
    assert res.failed
    assert res.result["failures"] == {"custom_metrics": NOT_FOUND}
    asked = [r for r in kube.requests if r.path == DEPLOYMENT]
    assert [(r.status, r.auth_scheme, r.impersonate) for r in asked] == [(404, "Bearer", ())]


def test_the_environment_as_kubernetes_core_reads_it(run_module: Any, kube: FakeKube, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8S_AUTH_KUBECONFIG", str(kube.kubeconfig_path))
    monkeypatch.setenv("K8S_AUTH_IMPERSONATE_USER", "system:serviceaccount:triton:verifier")
    monkeypatch.setenv("K8S_AUTH_IMPERSONATE_GROUPS", "system:serviceaccounts,viewers")
    res = _run(run_module, kube)
    assert res.result["failures"] == {"custom_metrics": NOT_FOUND}
    assert [r for r in kube.requests if r.path == DEPLOYMENT][-1].impersonate == (
        ("Impersonate-User", "system:serviceaccount:triton:verifier"),
        ("Impersonate-Group", "system:serviceaccounts"),
        ("Impersonate-Group", "viewers"),
    )


def test_host_api_key_and_ca_cert_without_a_kubeconfig(run_module: Any, kube: FakeKube) -> None:
    res = _run(run_module, kube, host=kube.url, api_key=kube.token, ca_cert=str(kube.ca_path))
    assert res.result["failures"] == {"custom_metrics": NOT_FOUND}
    res = _run(run_module, kube, host=kube.url, api_key="not-the-token", ca_cert=str(kube.ca_path))
    assert res.result["failures"] == {"custom_metrics": "reading Deployment triton/triton: 401 Unauthorized: Unauthorized"}


def test_groups_without_a_user_fail_before_any_request(run_module: Any, kube: FakeKube) -> None:
    res = _run(run_module, kube, kubeconfig=str(kube.kubeconfig_path), impersonate_groups=["viewers"])
    assert res.failed
    assert res.result["msg"].startswith("impersonate_groups ['viewers'] needs impersonate_user")
    assert "failures" not in res.result
    assert kube.requests == []


def test_the_action_group_sets_the_access_once_for_kubernetes_core_and_serving_verify(kube: FakeKube, tmp_path: Path) -> None:
    play = [{
        "hosts": "localhost", "gather_facts": False,
        "module_defaults": {"group/gpu_ops.mig_serving.k8s": {"kubeconfig": str(kube.kubeconfig_path)}},
        "tasks": [
            {"name": "kubernetes.core", "kubernetes.core.k8s_info": {"kind": "Namespace", "name": "kube-system"}, "register": "ns"},
            {"name": "ours", "gpu_ops.mig_serving.serving_verify": {"hpa_name": "", "check_lb_address": False, "retries": 0},
             "register": "verify", "ignore_errors": True},
            {"name": "a kubeconfig mapping wins over the default; its token is not echoed",
             "gpu_ops.mig_serving.serving_verify": {"kubeconfig": kube.kubeconfig(), "hpa_name": "", "check_lb_address": False, "retries": 0},
             "register": "mapped", "ignore_errors": True},
            {"ansible.builtin.assert": {"that": ["ns.resources | length == 1", "verify.failures == expected", "mapped.failures == expected",
                                                 "mapped.invocation.module_args.kubeconfig is mapping",
                                                 "kube_token not in (mapped | ansible.builtin.to_json)"]},
             "vars": {"expected": {"custom_metrics": NOT_FOUND}, "kube_token": kube.token}},
        ],
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env: Dict[str, str] = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_AUTH_", "ANSIBLE_"))}
    # results carry the module's arguments (ansible-core < 2.21 always; 2.21 with INJECT_INVOCATION), credentials masked
    env.update(HOME=str(tmp_path), ANSIBLE_INJECT_INVOCATION="1", ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    kube.clear_requests()
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(tmp_path / "play.yml"),
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "ok=4" in proc.stdout, proc.stdout[-3000:]
    assert "failed=0" in proc.stdout, proc.stdout[-3000:]
    assert any(r.path == DEPLOYMENT and r.status == 404 for r in kube.requests)
