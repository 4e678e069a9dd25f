# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The mig_config lookup: the controller reads a layout file exactly as mig_verify reads it on the node."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest
import yaml
from ansible import constants as C
from ansible.errors import AnsibleLookupError
from ansible.parsing.dataloader import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modules"))

from mig_module_harness import FIXTURES, ModuleExit, a100_mig_node, run_module

from ansible_collections.gpu_ops.mig_serving.plugins.filter.mig import FilterModule
from ansible_collections.gpu_ops.mig_serving.plugins.lookup import mig_config
from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_verify

__all__ = ["run_module"]

NAME = "gpu_ops.mig_serving.mig_config"
ROOT = Path(__file__).resolve().parents[4]
CONFORMANCE = FIXTURES.parents[1] / "conformance" / "mig-parted"
SHIPPED = sorted(p for p in CONFORMANCE.glob("*config*.yaml"))
LAYOUTS = ROOT / "inventories" / "layouts" / "dgx.yaml"
RunModule = Callable[..., ModuleExit]

HEX_FILE = """\
version: v1
mig-configs:
  a100-three:
    - device-filter: 0x20B010DE
      devices: all
      mig-enabled: true
      mig-devices:
        "3g.20gb": 2
    - device-filter: [0x233510DE, "0x233B10DE"]
      devices: all
      mig-enabled: false
"""


def lookup(terms: List[Any], variables: Dict[str, Any] | None = None, **kwargs: Any) -> List[Any]:
    C.config.initialize_plugin_configuration_definitions("lookup", NAME, yaml.safe_load(mig_config.DOCUMENTATION)["options"])
    plugin = mig_config.LookupModule(loader=DataLoader(), templar=None)
    plugin._load_name = NAME
    result: List[Any] = plugin.run(terms, variables=variables if variables is not None else {"inventory_hostname": "gpu-node-1"}, **kwargs)
    return result


@pytest.mark.parametrize("path", [*SHIPPED, LAYOUTS], ids=lambda p: p.name)
def test_returns_what_safe_load_returns_for_valid_files(path: Path) -> None:
    (config,) = lookup([str(path)])
    assert config == yaml.safe_load(path.read_text())
    assert json.loads(json.dumps(config)) == config  # plain types only: Ansible and to_json take it as it is


def test_unquoted_hex_device_filters_are_read_as_written(tmp_path: Path) -> None:
    path = tmp_path / "hex.yaml"
    path.write_text(HEX_FILE)
    (config,) = lookup([str(path)])
    entries = config["mig-configs"]["a100-three"]
    assert entries[0]["device-filter"] == "0x20B010DE"
    assert entries[1]["device-filter"] == ["0x233510DE", "0x233B10DE"]
    assert entries[0]["mig-devices"]["3g.20gb"].__class__ is int  # a plain int, no HexInt
    plan = FilterModule().filters()["mig_plan"](config, "a100-three", {"count": 1, "pci_device_id": "0x20B010DE"})
    assert plan[0]["devices"] == {"3g.20gb": 2}


def test_controller_and_node_read_the_same_file_alike(tmp_path: Path, run_module: RunModule) -> None:
    """The lookup's mapping given inline to mig_verify, and the file itself given to mig_verify, verify alike."""
    path = tmp_path / "hex.yaml"
    path.write_text(HEX_FILE)
    (config,) = lookup([str(path)])
    from_file = run_module(mig_verify.main, {"config_file": str(path), "config": "a100-three", "backend": "nvidia_smi",
                                             "fail_on_mismatch": False}, a100_mig_node())
    inline = run_module(mig_verify.main, {"layout": config["mig-configs"]["a100-three"], "config": "a100-three",
                                          "backend": "nvidia_smi", "fail_on_mismatch": False}, a100_mig_node())
    assert not from_file.failed, from_file.result
    assert not inline.failed, inline.result
    assert from_file.result["expected"] == inline.result["expected"]
    assert from_file.result["mismatches"] == inline.result["mismatches"]
    assert from_file.result["expected"][0]["devices"] == {"3g.20gb": 2}


def test_relative_path_is_searched_in_the_play_files(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "layouts.yaml").write_text(LAYOUTS.read_text())
    (config,) = lookup(["layouts.yaml"], variables={"inventory_hostname": "n1", "role_path": str(tmp_path)})
    assert "all-disabled" in config["mig-configs"]


def test_one_path_only(tmp_path: Path) -> None:
    with pytest.raises(AnsibleLookupError, match=r"give exactly one layout file path \(host gpu-node-1\), not 2"):
        lookup([str(LAYOUTS), str(LAYOUTS)])
    with pytest.raises(AnsibleLookupError, match="must be a non-empty string"):
        lookup([""])


def test_without_a_host_the_message_still_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: v1\nmig-configs:\n  a: []\n  a: []\n")
    with pytest.raises(AnsibleLookupError) as exc:
        lookup([str(path)], variables={})
    assert str(exc.value) == (
        f"mig_config: MIG layout file: {path}, line 4: duplicate key 'a' (first defined on line 3); YAML keeps only the last "
        "definition, so one of them would be lost silently: rename or remove one"
    )
