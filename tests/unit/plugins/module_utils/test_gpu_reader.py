# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/_gpu_reader.py: one backend option spec, documented once, used by every GPU-reading module."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.doc_fragments._gpu_backend import ModuleDocFragment
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _gpu_reader

MODULES = Path(__file__).resolve().parents[4] / "plugins" / "modules"
GPU_MODULES = ("mig_info", "mig_node_state", "mig_verify")


def _fragment_options() -> Dict[str, Any]:
    options: Dict[str, Any] = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    return options


def _documentation(module: str) -> Dict[str, Any]:
    tree = ast.parse((MODULES / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DOCUMENTATION" for t in node.targets):
            doc: Dict[str, Any] = yaml.safe_load(ast.literal_eval(node.value))
            return doc
    raise AssertionError(f"{module} has no DOCUMENTATION")


def test_the_doc_fragment_documents_exactly_the_spec() -> None:
    spec = _gpu_reader.gpu_backend_argument_spec()
    options = _fragment_options()
    assert set(options) == set(spec)
    for name, entry in spec.items():
        documented = {k: v for k, v in options[name].items() if k in ("type", "choices", "default")}
        assert documented == entry, name


def test_backend_choices_are_the_one_constant() -> None:
    assert _gpu_reader.gpu_backend_argument_spec()["backend"]["choices"] == list(_gpu_reader.BACKENDS)
    assert _fragment_options()["backend"]["choices"] == list(_gpu_reader.BACKENDS)
    assert _fragment_options()["timeout"]["default"] == _gpu_reader.DEFAULT_TIMEOUT


@pytest.mark.parametrize("module", GPU_MODULES)
def test_every_gpu_module_takes_the_shared_spec_and_fragment_without_a_copy(module: str) -> None:
    source = (MODULES / f"{module}.py").read_text()
    assert any(use in source for use in ("**gpu_backend_argument_spec()", "argument_spec=gpu_backend_argument_spec()",
                                         ", gpu_backend_argument_spec())")), module
    doc = _documentation(module)
    assert "gpu_ops.mig_serving._gpu_backend" in doc["extends_documentation_fragment"], module
    own = doc.get("options") or {}
    assert not set(own) & set(_fragment_options()), f"{module} documents a backend option again: {sorted(set(own) & set(_fragment_options()))}"
    for name in _fragment_options():
        assert f'"{name}": {{' not in source, f"{module} spells the {name} option's spec again"


def test_unknown_backend_is_refused_naming_the_choices() -> None:
    with pytest.raises(_gpu_reader.GpuReadError, match="unknown backend 'cuda'; choose one of auto, nvml, nvidia_smi"):
        _gpu_reader.read_gpus(object(), "cuda")
