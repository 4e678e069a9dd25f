# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The mig_fleet filter: hostvars | gpu_ops.mig_serving.mig_fleet(groups['gpu_nodes'], strategy), on Ansible's own
HostVars (templated on access, as in a play) built from an inventory, and on plain mappings for the error cases."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.parsing.vault import VaultLib, VaultSecret
from ansible.vars.hostvars import HostVars
from ansible.vars.manager import VariableManager

from ansible_collections.gpu_ops.mig_serving.plugins.filter import mig as mig_filters
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_layout_file import read_layout_file

ROOT = Path(__file__).resolve().parents[4]
LAYOUTS = ROOT / "inventories" / "layouts" / "dgx.yaml"
FLEET = mig_filters.FilterModule().filters()["mig_fleet"]
A100 = {"count": 8, "pci_device_id": "0x20B010DE"}


def hostvars_of(inventory: Path, loader: Any = None) -> Tuple[HostVars, List[str]]:
    """HostVars of an inventory, as a play sees them, and its gpu_nodes group's hosts."""
    loader = loader or DataLoader()
    inv = InventoryManager(loader=loader, sources=[str(inventory)])
    return HostVars(inv, VariableManager(loader=loader, inventory=inv), loader), [h.name for h in inv.groups["gpu_nodes"].get_hosts()]


def host(**values: Any) -> Dict[str, Any]:
    return {"mig_layout_config": "all-1g.5gb", "mig_layout_config_file": str(LAYOUTS), "gpu_ops_node_gpus": A100, **values}


def test_dgx_inventory() -> None:
    """inventories/dgx: the layout file named with {{ inventory_dir }}, the GPUs from hosts.yml."""
    hostvars, hosts = hostvars_of(ROOT / "inventories" / "dgx")
    fleet = FLEET(hostvars, hosts, "mixed")
    assert fleet["profiles"]["1g.5gb"] == {"resource": "nvidia.com/mig-1g.5gb", "capacity": 72, "slices": 1, "nodes": ["dgx-a100-01", "dgx-a100-02"]}
    assert fleet["profiles"]["1g.18gb"]["capacity"] == 56
    assert fleet["expected"]["dgx-a100-02"] == {"nvidia.com/mig-1g.5gb": 16, "nvidia.com/mig-2g.10gb": 8, "nvidia.com/mig-3g.20gb": 8}
    assert {name: entry["config"] for name, entry in fleet["nodes"].items()} == {
        "dgx-a100-01": "all-1g.5gb", "dgx-a100-02": "all-balanced", "dgx-h200-01": "all-1g.18gb"}


def test_dgx_inventory_single_names_the_non_uniform_host() -> None:
    hostvars, hosts = hostvars_of(ROOT / "inventories" / "dgx")
    with pytest.raises(AnsibleFilterError, match=r"^mig_fleet: GPU node dgx-a100-02: strategy 'single' needs one MIG profile on every GPU"):
        FLEET(hostvars, hosts, "single")


def test_kubernetes_node_name(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"gpu_nodes": {"hosts": {
        "dgx-1": host(gpu_ops_k8s_node_name="{{ inventory_hostname }}.cluster.internal")}}}}}))
    hostvars, hosts = hostvars_of(inventory)
    fleet = FLEET(hostvars, hosts)
    assert list(fleet["nodes"]) == ["dgx-1.cluster.internal"]
    assert fleet["nodes"]["dgx-1.cluster.internal"]["host"] == "dgx-1"
    assert fleet["strategy"] == "mixed"


def test_undefined_variable_in_a_template_names_host_and_variable(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"gpu_nodes": {"hosts": {
        "dgx-1": host(mig_layout_config_file="{{ layouts_dir }}/dgx.yaml")}}}}}))
    hostvars, hosts = hostvars_of(inventory)
    with pytest.raises(AnsibleFilterError, match=r"^mig_fleet: GPU node dgx-1: mig_layout_config_file: .*layouts_dir"):
        FLEET(hostvars, hosts)


def test_every_host_missing_something_is_named_at_once() -> None:
    no_gpus = {k: v for k, v in host().items() if k != "gpu_ops_node_gpus"}
    hostvars = {"dgx-1": no_gpus, "dgx-2": {"mig_layout_config": "all-1g.5gb"}, "dgx-3": host()}
    with pytest.raises(AnsibleFilterError) as err:
        FLEET(hostvars, ["dgx-1", "dgx-2", "dgx-3"])
    assert str(err.value) == (
        "mig_fleet: GPU node dgx-1 needs " + mig_filters._NEEDS + "; it lacks gpu_ops_node_gpus; "
        "GPU node dgx-2 needs " + mig_filters._NEEDS + "; it lacks mig_layout_config_file, gpu_ops_node_gpus"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mig_layout_config": "all-1g.6gb"},
         rf"^mig_fleet: GPU node dgx-7: mig_layout_config 'all-1g.6gb' is not in {LAYOUTS} \(it has: all-1g.18gb, all-1g.5gb, all-balanced, "
         r"all-disabled\)$"),
        ({"mig_layout_config": ""}, r"^mig_fleet: GPU node dgx-7: mig_layout_config must be a non-empty string, not ''$"),
        ({"mig_layout_config_file": "no-such-layouts.yaml"},
         r"^mig_fleet: GPU node dgx-7: layout file 'no-such-layouts.yaml' \(variable mig_layout_config_file\) not found"),
        ({"gpu_ops_k8s_node_name": 7}, r"^mig_fleet: GPU node dgx-7: gpu_ops_k8s_node_name must be a non-empty string, not 7$"),
        ({"gpu_ops_node_gpus": {"count": 8, "pci_device_id": "0x233510DE"}},
         r"^mig_fleet: GPU node dgx-7: config 'all-1g.5gb': GPU 0 \(NVIDIA H200, 0x233510DE\) is not covered by any entry"),
        ({"gpu_ops_node_gpus": "eight"}, r"^mig_fleet: GPU node dgx-7: 'gpus' must be a non-empty list of GPUs"),
    ],
)
def test_bad_host_variables(values: Dict[str, Any], message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        FLEET({"dgx-7": host(**values)}, ["dgx-7"])


def test_bad_layout_file_names_file_host_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "layouts.yaml"
    bad.write_text("version: v1\nmig-configs:\n  a: []\n  a: []\n")
    with pytest.raises(AnsibleFilterError, match=rf"^mig_fleet: GPU node dgx-7: MIG layout file \(variable mig_layout_config_file\): {bad}.*"
                                                 r"duplicate key 'a'"):
        FLEET({"dgx-7": host(mig_layout_config_file=str(bad), mig_layout_config="a")}, ["dgx-7"])


@pytest.mark.parametrize(
    ("hostvars", "hosts", "strategy", "message"),
    [
        ({"a": host()}, None, "mixed", r"^mig_fleet: give the GPU hosts as a list of inventory names"),
        ({"a": host()}, "a", "mixed", r"^mig_fleet: give the GPU hosts as a list"),
        ({"a": host()}, [], "mixed", r"^mig_fleet: the list of GPU hosts is empty"),
        ({"a": host()}, ["b"], "mixed", r"^mig_fleet: GPU node b: not in the inventory$"),
        ({"a": host()}, ["a"], "mix", r"^mig_fleet: unknown MIG strategy 'mix'; the device plugin knows mixed, single$"),
        ([], ["a"], "mixed", r"^mig_fleet: input must be hostvars"),
    ],
)
def test_bad_arguments(hostvars: Any, hosts: Any, strategy: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        FLEET(hostvars, hosts, strategy)


def test_relative_path_is_found_next_to_the_playbook(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    shutil.copyfile(LAYOUTS, tmp_path / "files" / "fleet.yaml")
    fleet = FLEET({"a": host(mig_layout_config_file="fleet.yaml", playbook_dir=str(tmp_path))}, ["a"])
    assert fleet["expected"] == {"a": {"nvidia.com/mig-1g.5gb": 56}}


def test_one_file_is_read_once_for_the_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: List[str] = []

    def counting(path: str, source: str = "", loader: Any = None) -> Any:
        reads.append(path)
        return read_layout_file(path, source, loader)

    monkeypatch.setattr(mig_filters, "read_layout_file", counting)
    hostvars = {f"dgx-{i}": host() for i in range(5)}
    assert FLEET(hostvars, sorted(hostvars))["profiles"]["1g.5gb"]["capacity"] == 5 * 56
    assert reads == [str(LAYOUTS)]


def test_vault_encrypted_layout_file(tmp_path: Path) -> None:
    secret = [("default", VaultSecret(b"fleet-test-password"))]
    vaulted = tmp_path / "layouts.yaml"
    vaulted.write_bytes(VaultLib(secret).encrypt(LAYOUTS.read_bytes()))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"gpu_nodes": {"hosts": {"dgx-1": host(mig_layout_config_file=str(vaulted))}}}}}))
    loader = DataLoader()
    loader.set_vault_secrets(secret)
    hostvars, hosts = hostvars_of(inventory, loader)
    assert FLEET(hostvars, hosts)["expected"] == {"dgx-1": {"nvidia.com/mig-1g.5gb": 56}}
    # without the password: an error naming the file and the variable, not a traceback
    hostvars, hosts = hostvars_of(inventory)
    with pytest.raises(AnsibleFilterError, match=rf"^mig_fleet: GPU node dgx-1: MIG layout file {vaulted} \(variable mig_layout_config_file\): "):
        FLEET(hostvars, hosts)
