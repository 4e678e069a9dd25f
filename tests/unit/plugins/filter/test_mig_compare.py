# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mig_compare on the controller says exactly what mig_verify says on the node, for the same GPUs."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from mig_module_harness import FIXTURES, ModuleExit, a100_mig_node, h200_node

from ansible_collections.gpu_ops.mig_serving.plugins.filter.mig import FilterModule
from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_info, mig_verify

if not FIXTURES.is_dir():
    pytest.skip(f"nvidia-smi fixtures not found at {FIXTURES}", allow_module_level=True)

CONFIG = FIXTURES.parents[1] / "conformance" / "mig-parted" / "config-default.yaml"
FILTERS = FilterModule().filters()


@pytest.mark.parametrize(("node", "config"), [(h200_node, "all-disabled"), (h200_node, "all-1g.18gb"), (a100_mig_node, "all-3g.20gb"),
                                              (a100_mig_node, "all-1g.5gb"), (a100_mig_node, "all-disabled")])
def test_same_mismatches_as_mig_verify(run_module: Any, node: Any, config: str) -> None:
    gpus: List[Dict[str, Any]] = run_module(mig_info.main, {"backend": "nvidia_smi"}, node()).result["gpus"]
    verified: ModuleExit = run_module(mig_verify.main, {"config_file": str(CONFIG), "config": config, "backend": "nvidia_smi",
                                                        "fail_on_mismatch": False}, node())
    plan = FILTERS["mig_plan"](yaml.safe_load(CONFIG.read_text()), config, gpus)
    assert FILTERS["mig_compare"](plan, gpus) == verified.result["mismatches"]


def test_the_a100_guide_node_differs_from_all_3g(run_module: Any) -> None:
    gpus = run_module(mig_info.main, {"backend": "nvidia_smi"}, a100_mig_node()).result["gpus"]
    plan = FILTERS["mig_plan"](yaml.safe_load(CONFIG.read_text()), "all-3g.20gb", gpus)
    mismatches = FILTERS["mig_compare"](plan, gpus)
    assert {"gpu": 0, "profile": "instance", "expected": "complete", "actual": mismatches[-1]["actual"]} == mismatches[-1]


def test_bad_input_is_named() -> None:
    with pytest.raises(AnsibleFilterError, match="mig_compare: input must be a plan"):
        FILTERS["mig_compare"]({"not": "a plan"}, [])
    with pytest.raises(AnsibleFilterError, match="mig_compare: malformed plan or GPU list"):
        FILTERS["mig_compare"]([{"index": 0}], [{"index": 0}])
