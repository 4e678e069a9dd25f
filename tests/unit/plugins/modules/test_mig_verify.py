# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
import yaml
from mig_module_harness import FIXTURES, FakeNode, ModuleExit, a100_mig_node, h200_node

from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_verify

if not FIXTURES.is_dir():
    pytest.skip(f"nvidia-smi fixtures not found at {FIXTURES}", allow_module_level=True)

RunModule = Callable[..., ModuleExit]
CONFIG = FIXTURES.parents[1] / "conformance" / "mig-parted" / "config-default.yaml"
INVALID = yaml.safe_load((Path(__file__).resolve().parents[3] / "conformance" / "invalid_layouts.yaml").read_text())


def test_h200_all_disabled_matches(run_module: RunModule) -> None:
    res = run_module(mig_verify.main, {"config_file": str(CONFIG), "config": "all-disabled", "backend": "nvidia_smi"}, h200_node())
    assert not res.failed, res.result
    assert res.result["matched"] is True
    assert res.result["mismatches"] == []
    assert res.result["expected"] == [{"index": 0, "model": "NVIDIA H200", "mig_enabled": False, "devices": {}}]
    assert res.result["actual"] == [
        {"index": 0, "name": "NVIDIA H200", "mig_mode_current": "disabled", "mig_mode_pending": "disabled", "devices": {}}
    ]


def test_h200_all_1g18gb_fails_with_a_table(run_module: RunModule) -> None:
    res = run_module(mig_verify.main, {"config_file": str(CONFIG), "config": "all-1g.18gb", "backend": "nvidia_smi"}, h200_node())
    assert res.failed
    assert res.result["matched"] is False
    assert res.result["mismatches"] == [
        {"gpu": 0, "profile": "mig-mode", "expected": "enabled", "actual": "disabled"},
        {"gpu": 0, "profile": "1g.18gb", "expected": 7, "actual": 0},
    ]
    assert res.result["msg"].splitlines() == [
        "MIG layout 'all-1g.18gb' does not match this node (2 difference(s)):",
        "GPU  PROFILE   EXPECTED  ACTUAL",
        "0    mig-mode  enabled   disabled",
        "0    1g.18gb   7         0",
    ]


def test_fail_on_mismatch_false_reports_without_failing(run_module: RunModule) -> None:
    args = {"config_file": str(CONFIG), "config": "all-1g.18gb", "backend": "nvidia_smi", "fail_on_mismatch": False}
    res = run_module(mig_verify.main, args, h200_node())
    assert not res.failed
    assert res.result["matched"] is False
    assert len(res.result["mismatches"]) == 2


def test_inline_layout_on_mig_enabled_a100(run_module: RunModule) -> None:
    layout = [{"devices": "all", "mig-enabled": True, "mig-devices": {"1c.3g.20gb": 3, "3g.20gb": 1}}]
    res = run_module(mig_verify.main, {"layout": layout, "config": "split", "fail_on_mismatch": False}, a100_mig_node())
    assert not res.failed, res.result
    assert res.result["actual"][0]["devices"] == {"1c.3g.20gb": 3}
    # GI 2 exists but has no compute instance: not a usable MIG device, so 3g.20gb is 0 and GI 2 is named
    assert res.result["mismatches"] == [
        {"gpu": 0, "profile": "3g.20gb", "expected": 1, "actual": 0},
        {"gpu": 0, "profile": "instance", "expected": "complete", "actual": "GPU instance 2 (3g.20gb) has no compute instance"},
    ]


def test_layout_unrealisable_on_the_node_is_an_error_not_a_mismatch(run_module: RunModule) -> None:
    res = run_module(mig_verify.main, {"config_file": str(CONFIG), "config": "all-1g.5gb", "backend": "nvidia_smi"}, h200_node())
    assert res.failed
    assert "matched" not in res.result
    assert "the layout cannot be realised on this node" in res.result["msg"]
    assert "GPU 0 (NVIDIA H200, 0x233510DE): profile '1g.5gb' is not supported" in res.result["msg"]


def test_pending_mode_change_is_a_mismatch(run_module: RunModule) -> None:
    node = h200_node()
    node.outputs["--query-gpu="] = node.outputs["--query-gpu="].replace("Disabled, Disabled", "Disabled, Enabled")
    res = run_module(mig_verify.main, {"config_file": str(CONFIG), "config": "all-disabled", "backend": "nvidia_smi"}, node)
    assert res.failed
    assert res.result["mismatches"] == [
        {"gpu": 0, "profile": "mig-mode", "expected": "disabled", "actual": "disabled (pending enabled: reset needed)"}
    ]


def test_config_name_not_in_file(run_module: RunModule) -> None:
    node = h200_node()
    res = run_module(mig_verify.main, {"config_file": str(CONFIG), "config": "nope"}, node)
    assert res.failed
    assert "config 'nope' not found" in res.result["msg"]
    assert node.calls == []


def test_missing_config_file(run_module: RunModule, tmp_path: Path) -> None:
    node = h200_node()
    res = run_module(mig_verify.main, {"config_file": str(tmp_path / "none.yaml"), "config": "x"}, node)
    assert res.failed
    assert "Reading MIG config file" in res.result["msg"]
    assert "No such file" in res.result["msg"]
    assert node.calls == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"config": "x"}, "one of the following is required: config_file, layout"),
        ({"config_file": "/x", "layout": [], "config": "x"}, "mutually exclusive"),
        ({"config_file": "/x"}, "missing parameter(s) required by 'config_file': config"),
    ],
)
def test_argument_rules(run_module: RunModule, args: Dict[str, Any], message: str) -> None:
    node = h200_node()
    res = run_module(mig_verify.main, args, node)
    assert res.failed
    assert message in res.result["msg"]
    assert node.calls == []


@pytest.mark.parametrize("case", [c for c in INVALID if "layout" in c and c["gpus"] == "a100x1"], ids=lambda c: c["id"])
def test_invalid_layouts_fail_before_any_gpu_change(run_module: RunModule, case: Dict[str, Any]) -> None:
    """The conformance table's invalid layouts for one A100-40GB, on an A100-40GB node: each fails with the
    planner's message, and nothing but read-only listings ran."""
    node = a100_mig_node()
    res = run_module(mig_verify.main, {"layout": case["layout"], "config": case["id"], "backend": "nvidia_smi"}, node)
    assert res.failed
    assert "matched" not in res.result
    assert res.result["msg"].startswith(f"Verifying MIG layout '{case['id']}'")
    assert re.search(case["error"], res.result["msg"]), res.result["msg"]
    read_only = [["mig", "-lgip"], ["mig", "-lgipp"], ["mig", "-lgi"], ["mig", "-lci"]]
    for call in node.calls:
        assert call[1].startswith("--query-gpu=") or call[1:] in read_only, call


def test_invalid_file_content_fails_before_reading_gpus(run_module: RunModule, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: v1\nmig-configs:\n  x:\n    - devices: 0\n      mig-enabled: false\n")
    node = h200_node()
    res = run_module(mig_verify.main, {"config_file": str(bad), "config": "x"}, node)
    assert res.failed
    assert "'devices: 0' is a bare integer" in res.result["msg"]
    assert str(bad) in res.result["msg"]
    assert node.calls == []


def test_node_without_gpus(run_module: RunModule) -> None:
    node = FakeNode({"--query-gpu=": ""})
    res = run_module(mig_verify.main, {"layout": [{"devices": "all", "mig-enabled": False}], "backend": "nvidia_smi"}, node)
    assert res.failed
    assert "Verifying MIG layout '<inline layout>'" in res.result["msg"]
