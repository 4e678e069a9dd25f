# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Conformance: the configs NVIDIA ships with mig-parted and the GPU Operator parse and plan correctly.

The data lives in ../shared/conformance/mig-parted (read-only, copied from NVIDIA's repositories);
what each config must yield is written by hand in expected_plans.yaml.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_catalog import MODELS
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError, parse_config
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError, plan
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import resources

HERE = Path(__file__).resolve().parent
CONFORMANCE = HERE.parents[1] / "tests" / "data" / "shared" / "conformance" / "mig-parted"
if not CONFORMANCE.is_dir():
    pytest.skip(f"conformance data not found at {CONFORMANCE}", allow_module_level=True)

DEFAULT_FILES = ["config-default.yaml", "gpu-operator-default-mig-parted-config.yaml"]
ALL_FILES = [*DEFAULT_FILES, "examples-config.yaml", "examples-dgx-station-80gb-config.yaml"]
EXPECTED: Dict[str, Dict[str, Dict[str, int]]] = yaml.safe_load((HERE / "expected_plans.yaml").read_text())
MODEL = {m.key: m for m in MODELS}


@functools.cache
def load(name: str) -> Any:
    return parse_config((CONFORMANCE / name).read_text(), source=name)


def gpus_of(model_key: str, n: int = 8) -> List[Dict[str, Any]]:
    return [{"index": i, "pci_device_id": MODEL[model_key].device_ids[0]} for i in range(n)]


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_shipped_config_parses(name: str) -> None:
    cfg = load(name)
    raw = yaml.safe_load((CONFORMANCE / name).read_text())
    assert list(cfg.configs) == list(raw["mig-configs"])
    for cname, entries in cfg.configs.items():
        assert len(entries) == len(raw["mig-configs"][cname])


def test_hooks_file_is_not_a_mig_config() -> None:
    with pytest.raises(MigConfigError, match="unknown top-level key\\(s\\) hooks"):
        load("hooks-default.yaml")


@pytest.mark.parametrize("name", DEFAULT_FILES)
def test_expectations_cover_every_config(name: str) -> None:
    missing = sorted(set(load(name).configs) - set(EXPECTED))
    assert not missing, f"add these configs of {name} to expected_plans.yaml: {missing}"


def _cases() -> List[Any]:
    cases = []
    for name in DEFAULT_FILES:
        for cname in yaml.safe_load((CONFORMANCE / name).read_text())["mig-configs"]:
            for key in MODEL:
                cases.append(pytest.param(name, cname, key, id=f"{name.split('-', maxsplit=1)[0]}:{cname}:{key}"))
    return cases


@pytest.mark.parametrize(("name", "cname", "model"), _cases())
def test_config_plans_exactly_on_its_target_models(name: str, cname: str, model: str) -> None:
    cfg = load(name)
    expected = EXPECTED.get(cname, {}).get(model)
    if expected is None:
        with pytest.raises(MigPlanError, match=r"GPU 0 \("):
            plan(cfg, cname, gpus_of(model))
        return
    result = plan(cfg, cname, gpus_of(model))
    assert len(result) == 8
    assert resources(result) == {k: v * 8 for k, v in expected.items()}


def test_all_1g_5gb_on_dgx_a100_gives_56() -> None:
    result = plan(load("config-default.yaml"), "all-1g.5gb", gpus_of("A100-SXM4-40GB"))
    assert resources(result) == {"nvidia.com/mig-1g.5gb": 56}
    assert resources(result, "single") == {"nvidia.com/gpu": 56}


def test_rejection_names_gpu_model_and_profile() -> None:
    with pytest.raises(MigPlanError) as err:
        plan(load("config-default.yaml"), "all-1g.5gb", gpus_of("H200"))
    assert re.search(r"GPU 0 \(NVIDIA H200, 0x233510DE\): profile '1g\.5gb' is not supported", str(err.value))


def test_examples_custom_config_on_dgx_a100() -> None:
    result = plan(load("examples-config.yaml"), "custom-config", gpus_of("A100-SXM4-40GB"))
    assert [g["mig_enabled"] for g in result] == [False] * 4 + [True] * 4
    assert [g["devices"] for g in result[4:]] == [
        {"1g.5gb": 7},
        {"2g.10gb": 3},
        {"3g.20gb": 2},
        {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1},
    ]
    assert resources(result) == {
        "nvidia.com/gpu": 4,
        "nvidia.com/mig-1g.5gb": 9,
        "nvidia.com/mig-2g.10gb": 4,
        "nvidia.com/mig-3g.20gb": 3,
    }


def test_dgx_station_configs_plan_with_display_gpu() -> None:
    # DGX Station A100 80GB: four A100 80GB and, at index 3, the display GPU without MIG
    gpus = [{"index": i, "pci_device_id": "0x1FB010DE" if i == 3 else "0x20B210DE"} for i in range(5)]
    cfg = load("examples-dgx-station-80gb-config.yaml")
    for cname in cfg.configs:
        result = plan(cfg, cname, gpus)
        assert result[3]["mig_enabled"] is False, cname
    result = plan(cfg, "all-1g.10gb-dgx-station-80", gpus)
    assert resources(result) == {"nvidia.com/gpu": 1, "nvidia.com/mig-1g.10gb": 28}
    result = plan(cfg, "balanced-k8s-dgx-station-80", gpus)
    assert [g["devices"] for g in result] == [{}, {"3g.40gb": 2}, {"2g.20gb": 3, "1g.10gb": 1}, {}, {"1g.10gb": 7}]


INVALID = yaml.safe_load((HERE / "invalid_layouts.yaml").read_text())
GPU_SETS = {
    "a100x1": gpus_of("A100-SXM4-40GB", 1),
    "a100x2": gpus_of("A100-SXM4-40GB", 2),
    "h100x1": gpus_of("H100-SXM5-80GB", 1),
}


@pytest.mark.parametrize("case", INVALID, ids=[c["id"] for c in INVALID])
def test_invalid_layouts_are_rejected_with_the_right_message(case: Dict[str, Any]) -> None:
    gpus = GPU_SETS[case["gpus"]] if isinstance(case["gpus"], str) else case["gpus"]
    source = case["config"] if "config" in case else case["layout"]
    with pytest.raises((MigConfigError, MigPlanError)) as err:
        plan(source, case.get("name", "bad"), gpus)
    assert re.search(case["error"], str(err.value)), f"message was: {err.value}"
