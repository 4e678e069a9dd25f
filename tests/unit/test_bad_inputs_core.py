# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The bad-input table of the MIG model and the serving check (tests/data/bad_inputs/core.yaml).

Every case goes through the entry point a user reaches - the mig_config lookup, a filter, mig_verify or
serving_verify - and must be refused with the collection's own error (AnsibleLookupError, AnsibleFilterError,
fail_json) carrying the case's message: never a Python exception such as TypeError, KeyError,
UnicodeDecodeError or MemoryError.
"""
from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import yaml
from ansible import constants as C
from ansible.errors import AnsibleFilterError, AnsibleLookupError
from ansible.parsing.dataloader import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent / "plugins" / "modules"))

from mig_module_harness import FakeNode, ModuleExit, a100_mig_node, run_module

from ansible_collections.gpu_ops.mig_serving.plugins.filter.mig import FilterModule
from ansible_collections.gpu_ops.mig_serving.plugins.lookup import mig_config
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _kube_client
from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_verify, serving_verify

__all__ = ["run_module"]  # the fixture, for the module cases

TABLE = Path(__file__).resolve().parents[2] / "tests/data/bad_inputs/core.yaml"
CASES: List[Dict[str, Any]] = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
FILTERS = FilterModule().filters()
LOOKUP = "gpu_ops.mig_serving.mig_config"
RunModule = Callable[..., ModuleExit]

GOOD_KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.0.0.1:6443"}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: t}}]
current-context: x
"""


def _content(case: Dict[str, Any], key: str) -> bytes:
    if f"{key}_b64" in case:
        return base64.b64decode(case[f"{key}_b64"])
    if "file_size" in case:
        return b"#" * int(case["file_size"])
    return str(case[f"{key}_text"]).encode("utf-8")


def _assert_message(case: Dict[str, Any], message: str) -> None:
    for part in [case["message"], *case.get("also", [])]:
        assert part in message, f"{case['id']}: {part!r} not in:\n{message}"


def lookup_module() -> Any:
    """The lookup as Ansible's plugin loader sets it up: its options registered, its name set."""
    C.config.initialize_plugin_configuration_definitions("lookup", LOOKUP, yaml.safe_load(mig_config.DOCUMENTATION)["options"])
    plugin = mig_config.LookupModule(loader=DataLoader(), templar=None)
    plugin._load_name = LOOKUP
    return plugin


class _NoClient:
    """Stands in for the kubernetes client's config loader: a bad kubeconfig must be refused before it is used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the kubernetes client was asked ({name}) before the kubeconfig was checked")


def test_table_is_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    for case in CASES:
        assert case["id"].startswith("core-"), case["id"]
        assert {"area", "input", "message", "via"} <= set(case), case["id"]
        assert case["via"] in ("lookup", "mig_verify", "filter", "serving_verify"), case["id"]
    assert len(CASES) >= 45


@pytest.mark.parametrize("case", [c for c in CASES if c["via"] == "lookup"], ids=lambda c: c["id"])
def test_lookup(case: Dict[str, Any], tmp_path: Path) -> None:
    if case.get("file") == "missing":
        term = "no-such-layouts.yaml"
    else:
        path = tmp_path / "layouts.yaml"
        path.write_bytes(_content(case, "file"))
        term = str(path)
    options = {k: case[k] for k in ("host", "variable") if k in case}
    with pytest.raises(AnsibleLookupError) as exc:
        lookup_module().run([term], variables={"inventory_hostname": "gpu-node-1"}, **options)
    _assert_message(case, str(exc.value))
    assert f"host {case.get('host', 'gpu-node-1')}" in str(exc.value)


@pytest.mark.parametrize("case", [c for c in CASES if c["via"] == "mig_verify"], ids=lambda c: c["id"])
def test_mig_verify(case: Dict[str, Any], run_module: RunModule, tmp_path: Path) -> None:
    node = FakeNode({}) if case["node"] == "none" else a100_mig_node()
    args: Dict[str, Any] = {"config": case["config"], "backend": "nvidia_smi"}
    if "layout" in case:
        args["layout"] = case["layout"]
    else:
        path = tmp_path / "layouts.yaml"
        path.write_bytes(_content(case, "file"))
        args["config_file"] = str(path)
    res = run_module(mig_verify.main, args, node)
    assert res.failed, res.result
    assert "matched" not in res.result, "a layout error is not a mismatch"
    assert res.result["msg"].startswith(f"Verifying MIG layout '{case['config']}'"), res.result["msg"]
    _assert_message(case, res.result["msg"])
    if case["node"] == "none":
        assert node.calls == [], "the layout must be refused before the GPUs are read"


@pytest.mark.parametrize("case", [c for c in CASES if c["via"] == "filter"], ids=lambda c: c["id"])
def test_filter(case: Dict[str, Any]) -> None:
    with pytest.raises(AnsibleFilterError) as exc:
        FILTERS[case["filter"]](*case["args"])
    assert str(exc.value).startswith(f"{case['filter']}: "), str(exc.value)
    _assert_message(case, str(exc.value))


@pytest.mark.parametrize("case", [c for c in CASES if c["via"] == "serving_verify"], ids=lambda c: c["id"])
def test_serving_verify(case: Dict[str, Any], run_module: RunModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _kube_client._KUBERNETES is not None
    monkeypatch.setattr(_kube_client, "_KUBERNETES", (_NoClient(), _kube_client._KUBERNETES[1]))  # (config, client)
    path = tmp_path / "kubeconfig.yaml"
    if case.get("kubeconfig") == "missing":
        path = tmp_path / "no-such-kubeconfig"
    elif "kubeconfig_text" in case or "kubeconfig_b64" in case:
        path.write_bytes(_content(case, "kubeconfig"))
    else:
        path.write_text(GOOD_KUBECONFIG)
    args = {"kubeconfig": str(path), "hpa_name": "triton", **case.get("args", {})}
    res = run_module(serving_verify.main, args, FakeNode({}))
    assert res.failed, res.result
    _assert_message(case, res.result["msg"])
    if "kubeconfig_text" in case or "kubeconfig_b64" in case or case.get("kubeconfig") == "missing":
        assert str(path) in res.result["msg"], "the message names the kubeconfig"
