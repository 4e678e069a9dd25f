# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The secrets inventories/dgx reads from Ansible Vault (``vault_*``), as test stand-ins.

A site keeps them in a vaulted ``group_vars/k8s_control/vault.yml``; the serving roles refuse to run without them
(no chart default password, no unkeyed Triton admin APIs). Tests that run the serving stage on inventories/dgx pass
``VAULT_ARGS`` to ansible-playbook, or ``write_vault(inventory_copy)`` into a copied inventory."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List

VAULT_FILE = Path(__file__).resolve().parent / "data" / "vault_test_vars.yml"
VAULT_ARGS: List[str] = ["-e", f"@{VAULT_FILE}"]


def write_vault(inventory: Path) -> Path:
    """Put the stand-in vault variables into ``inventory/group_vars/k8s_control/vault.yml`` (a copied inventory)."""
    target = inventory / "group_vars" / "k8s_control" / "vault.yml"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(VAULT_FILE, target)
    return target
