# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/awx_configure.yml run for real against a FakeAWX, as a site runs it: its settings in a file, its
secrets in an ansible-vault encrypted file (tests/integration/test_awx.py and test_awx_jobs.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Set

import yaml

from .server import FakeAWX

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCM_URL = "https://git.example.org/gpu-ops/mig_serving.git"
EE_IMAGE = "registry.example.org/gpu-ops/mig-serving-ee:0.1.0"
SECRETS = {
    "vault_awx_configure_ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0LXNzaC1rZXktMTIzNDU=\n-----END OPENSSH PRIVATE KEY-----\n",
    "vault_awx_configure_vault_password": "vault-password-7f3a9c",
    "vault_awx_configure_kubeconfig": "apiVersion: v1\nkind: Config\nusers:\n- name: gpu-ops\n  user: {token: kube-token-5d2e8b}\n",
    "vault_awx_configure_callback_key": "callback-key-91c4d0",
}


def checkout_playbooks() -> Set[str]:
    """The playbooks of the project (AWX lists them from its checkout and checks job templates against them)."""
    return {"site.yml", *(str(p.relative_to(ROOT)) for p in (ROOT / "playbooks").glob("*.yml"))}


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    snapshot: Dict[str, Any]
    writes: int

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def recap_changed(self) -> int:
        m = re.search(r"localhost\s*:\s*ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0", self.proc.stdout)
        assert m, self.output[-4000:]
        return int(m.group(1))


class Harness:
    """Runs playbooks/awx_configure.yml against ``awx``. ``settings``: more site settings (over the test's own)."""

    def __init__(self, tmp: Path, collections: Path, awx: FakeAWX, settings: Optional[Dict[str, Any]] = None) -> None:
        self.tmp = tmp
        self.awx = awx
        self.env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", HOME=str(tmp), ANSIBLE_LOCALHOST_WARNING="0",
                        ANSIBLE_INVENTORY_UNPARSED_WARNING="0", ANSIBLE_COLLECTIONS_PATH=f"{collections}:{ROOT / 'collections'}")
        self.vault_pass = tmp / "vault-pass"
        self.vault_pass.write_text("test-vault-passphrase\n")
        self.secrets = tmp / "secrets.yml"
        self.secrets.write_text(yaml.safe_dump(SECRETS))
        proc = subprocess.run([str(BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(self.vault_pass), str(self.secrets)],
                              cwd=tmp, env=self.env, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "vault-password-7f3a9c" not in self.secrets.read_text()
        self.settings = tmp / "awx-site.yml"
        self.settings.write_text(yaml.safe_dump({"awx_configure_controller_host": awx.url, "awx_configure_scm_url": SCM_URL,
                                                 "awx_configure_ee_image": EE_IMAGE, **(settings or {})}))

    def run(self, *extra: str, token: str | None = None) -> Run:
        before = len(self.awx.writes())
        argv = [str(BIN / "ansible-playbook"), "playbooks/awx_configure.yml", "-v", "-e", f"@{self.settings}", "-e", f"@{self.secrets}",
                "--vault-password-file", str(self.vault_pass), "-e", f"awx_configure_controller_token={token or self.awx.token}", *extra]
        proc = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=400, check=False)
        return Run(proc, self.awx.snapshot(), len(self.awx.writes()) - before)
