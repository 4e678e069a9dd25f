# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every role's meta/argument_specs.yml documents exactly the variables of its defaults/main.yml, each with a
description, and the role's option page, generated from that spec (docs/roles/<role>.rst, scripts/gen-docs.py), names
every one of them."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "defaults" / "main.yml").is_file())


def test_roles_found() -> None:
    assert {"gpu_plugins", "k8s_objects"} <= set(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_mirror_defaults(role: str) -> None:
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    assert set(defaults) - set(options) == set(), "defaults without an argument spec"
    assert {k for k, v in options.items() if not v.get("required")} - set(defaults) == set(), "spec options without a default"
    for name, opt in options.items():
        assert name.startswith(f"{role}_"), f"{name}: public variables carry the role's prefix"
        assert opt.get("description"), f"{name}: no description"
        if "default" in opt and isinstance(defaults.get(name), (bool, int)) and "{{" not in str(defaults.get(name)):
            assert opt["default"] == defaults[name], f"{name}: spec default {opt['default']!r} != defaults {defaults[name]!r}"


@pytest.mark.parametrize("role", ROLES)
def test_the_generated_page_names_every_variable(role: str) -> None:
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    # reStructuredText escapes '_' in option names (triton\\_name)
    page = (ROOT / "docs" / "roles" / f"{role}.rst").read_text().replace("\\_", "_")
    for name in defaults:
        assert name in page, f"docs/roles/{role}.rst does not mention {name}: run scripts/gen-docs.py"
