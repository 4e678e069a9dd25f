# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every version_added in the collection's plugin docs (modules, lookup, filters, doc fragments; options included) is a
version the collection has: while nothing is released, galaxy.yml's version."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
VERSION = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]


def _docs() -> Iterator[Tuple[str, Any]]:
    plugins = ROOT / "plugins"
    for path in sorted(plugins.glob("*/*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "DOCUMENTATION" for t in node.targets):
                yield str(path.relative_to(ROOT)), yaml.safe_load(ast.literal_eval(node.value))
            elif isinstance(node, ast.ClassDef):  # doc fragments
                for item in node.body:
                    if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str):
                        yield f"{path.relative_to(ROOT)}:{node.name}", yaml.safe_load(item.value.value)
    for path in sorted(plugins.glob("filter/*.yml")):
        yield str(path.relative_to(ROOT)), yaml.safe_load(path.read_text())


def _versions(doc: Any, where: str = "") -> Iterator[Tuple[str, Any]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "version_added":
                yield where or "(top)", value
            else:
                yield from _versions(value, f"{where}.{key}" if where else str(key))
    elif isinstance(doc, list):
        for item in doc:
            yield from _versions(item, where)


DOCS = list(_docs())


def test_the_plugins_are_found() -> None:
    names = {name for name, _doc in DOCS}
    assert {"plugins/modules/serving_verify.py", "plugins/lookup/mig_config.py", "plugins/filter/mig_plan.yml"} <= names


@pytest.mark.parametrize(("name", "doc"), DOCS, ids=[name for name, _doc in DOCS])
def test_version_added_is_the_collection_version(name: str, doc: Any) -> None:
    wrong: List[Tuple[str, Any]] = [(where, v) for where, v in _versions(doc) if str(v) != VERSION]
    assert not wrong, f"{name}: version_added must be {VERSION} (galaxy.yml): {wrong}"
