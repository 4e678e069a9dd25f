# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fuzz-ish: random YAML-like structures and mutations of valid inputs fed to the parser, the planner, the
cluster comparison, the filters and the kubeconfig check; only the collection's own errors may come out.

Deterministic (a fixed seed per test), so the suite passes or fails the same way every time; hypothesis is not
a test dependency, so the generator is a small hand-written one.
"""
from __future__ import annotations

import copy
import inspect
import random
from typing import Any, Callable, Dict, List, Tuple, Type

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.filter.mig import FilterModule
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._kube_client import KubeconfigError, check_kubeconfig
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_cluster import compare_nodes
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_compare import compare
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError, parse_config, read_config
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_fleet import expected_resources
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError, plan
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import resources

ROUNDS = 400
FILTERS = FilterModule().filters()
MODEL_ERRORS = (MigConfigError, MigPlanError)

SCALARS: List[Any] = [
    None, True, False, 0, -1, 1, 7, 8, 3.5, 10**12, -(10**12), "", "all", "x", "1g.5gb", "1g.5gb+me", "7g.40gb",
    "0x20B010DE", "0x233510DE", "20B0", "mixed", "single", "enabled", "disabled", "v1", "nvidia.com/mig-1g.5gb",
    "\u00e9", "a: b", "[", "0x", 548409566,
]
KEYS: List[Any] = [
    "version", "mig-configs", "devices", "mig-enabled", "mig-devices", "device-filter", "index", "pci_device_id", "name",
    "supported_profiles", "placements", "start", "size", "id", "max_instances", "node", "config", "config_name", "gpus",
    "metadata", "status", "allocatable", "labels", "mig_enabled", "gpu_instances", "compute_instances", "profile",
    "gpu_instance_id", "mig_mode_current", "count", "1g.5gb", "a", 0, 1, True, None,
]

VALID_CONFIG: Dict[str, Any] = {
    "version": "v1",
    "mig-configs": {
        "a": [
            {"device-filter": ["0x20B010DE"], "devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}},
            {"device-filter": "0x233510DE", "devices": [0, 1], "mig-enabled": False},
        ],
    },
}
VALID_GPUS: List[Dict[str, Any]] = [{"index": i, "pci_device_id": "0x20B010DE"} for i in range(2)]


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A random structure of the shapes the inputs have: mappings, lists and the scalars the formats use."""
    roll = rng.random()
    if depth >= 4 or roll < 0.45:
        return rng.choice(SCALARS)
    if roll < 0.75:
        return {rng.choice(KEYS): junk(rng, depth + 1) for _round in range(rng.randint(0, 4))}
    return [junk(rng, depth + 1) for _round in range(rng.randint(0, 4))]


def mutate(rng: random.Random, data: Any) -> Any:
    """A copy of ``data`` with one value somewhere replaced by junk, or one key dropped or added."""
    data = copy.deepcopy(data)
    node: Any = data
    parent: Any = None
    key: Any = None
    for _round in range(rng.randint(0, 5)):
        if isinstance(node, dict) and node:
            parent, key = node, rng.choice(list(node))
        elif isinstance(node, list) and node:
            parent, key = node, rng.randrange(len(node))
        else:
            break
        node = parent[key]
    if parent is None:
        return junk(rng)
    action = rng.random()
    if action < 0.6:
        parent[key] = junk(rng)
    elif action < 0.8 and isinstance(parent, dict):
        del parent[key]
    elif isinstance(parent, dict):
        parent[rng.choice(KEYS)] = junk(rng)
    else:
        parent.append(junk(rng))
    return data


def error_of(call: Callable[[], Any], errors: Tuple[Type[Exception], ...]) -> str:
    """The message of the error ``call`` raises, "" when it succeeds; any other exception fails the test."""
    try:
        call()
    except errors as exc:
        return str(exc) or "(an error without a message)"
    return ""


def only_model_errors(call: Callable[[], Any]) -> None:
    assert error_of(call, MODEL_ERRORS) != "(an error without a message)"


@pytest.mark.parametrize("seed", range(4))
def test_parser_and_planner_raise_only_their_own_errors(seed: int) -> None:
    rng = random.Random(seed)
    for _round in range(ROUNDS):
        config = mutate(rng, VALID_CONFIG) if rng.random() < 0.8 else junk(rng)
        gpus = mutate(rng, VALID_GPUS) if rng.random() < 0.5 else VALID_GPUS
        only_model_errors(lambda: parse_config(config))  # noqa: B023 - called at once
        only_model_errors(lambda: plan(config, "a", gpus))  # noqa: B023
        only_model_errors(lambda: plan(config, rng.choice(SCALARS), gpus))  # noqa: B023


@pytest.mark.parametrize("seed", range(4))
def test_yaml_text_raises_only_config_errors(seed: int) -> None:
    """Random structures dumped as YAML, then cut or with a character changed: read_config refuses them cleanly."""
    rng = random.Random(seed)
    base = yaml.safe_dump(VALID_CONFIG, sort_keys=False)
    for _round in range(ROUNDS):
        text = yaml.safe_dump(mutate(rng, VALID_CONFIG), sort_keys=False) if rng.random() < 0.5 else base
        pos = rng.randrange(len(text))
        choice = rng.random()
        if choice < 0.3:
            text = text[:pos]
        elif choice < 0.6:
            text = text[:pos] + rng.choice(["?", ":", "[", "{", "&a", "*a", "\t", "\x00", "\x07", "- ", "'", "0x1F"]) + text[pos + 1:]
        data = text.encode("utf-8")
        if rng.random() < 0.2:
            data = data[:pos] + bytes([rng.randrange(128, 256)]) + data[pos:]
        only_model_errors(lambda: read_config(data, "fuzz.yaml"))  # noqa: B023


@pytest.mark.parametrize("seed", range(4))
def test_resources_compare_and_cluster_raise_only_their_own_errors(seed: int) -> None:
    rng = random.Random(seed)
    good_plan = plan(VALID_CONFIG, "a", VALID_GPUS)
    good_expected = expected_resources([{"node": "n1", "config": VALID_CONFIG, "config_name": "a", "gpus": VALID_GPUS}])
    good_nodes = [{"metadata": {"name": "n1", "labels": {"nvidia.com/mig-1g.5gb.count": "2"}},
                   "status": {"allocatable": {"nvidia.com/mig-1g.5gb": "2"}}}]
    gpus_now = [{"index": 0, "mig_mode_current": "enabled", "mig_mode_pending": "enabled",
                 "gpu_instances": [{"id": 1, "profile": "3g.20gb"}], "compute_instances": [{"id": 0, "gpu_instance_id": 1, "profile": "3g.20gb"}]}]
    for _round in range(ROUNDS):
        p = mutate(rng, good_plan)
        only_model_errors(lambda: resources(p, rng.choice(["mixed", "single", *SCALARS])))  # noqa: B023
        only_model_errors(lambda: compare(p, mutate(rng, gpus_now)))  # noqa: B023
        nodes = [{"node": "n1", "config": mutate(rng, VALID_CONFIG), "config_name": "a", "gpus": VALID_GPUS}]
        only_model_errors(lambda: expected_resources(mutate(rng, nodes) if rng.random() < 0.5 else nodes))  # noqa: B023
        only_model_errors(lambda: compare_nodes(mutate(rng, good_nodes), mutate(rng, good_expected)))


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_filters_raise_only_filter_errors(name: str) -> None:
    rng = random.Random(name)
    arity = len(inspect.signature(FILTERS[name]).parameters)
    for _round in range(ROUNDS):
        args = [junk(rng) for _round in range(rng.randint(0, arity - 1))]
        message = error_of(lambda: FILTERS[name](junk(rng), *args), (AnsibleFilterError,))  # noqa: B023 - called at once
        assert not message or message.startswith(f"{name}: "), message
        assert "cannot use this input" not in message, f"the model let a Python error through: {message}"


def test_kubeconfig_check_raises_only_its_own_error() -> None:
    rng = random.Random(13)
    good = {"apiVersion": "v1", "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "users": [{"name": "u", "user": {"token": "t"}}],
            "current-context": "x"}
    assert check_kubeconfig(yaml.safe_dump(good).encode(), "kubeconfig") == "x"
    for _round in range(ROUNDS):
        data = yaml.safe_dump(mutate(rng, good)).encode()
        message = error_of(lambda: check_kubeconfig(data, "kubeconfig", rng.choice([None, "x", "y"])), (KubeconfigError,))  # noqa: B023
        assert not message or message.startswith("kubeconfig"), message
