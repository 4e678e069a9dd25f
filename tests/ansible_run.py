# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""How the tests run ansible-playbook: the environment every run gets, and the network namespace of runs that must
not reach the network.

- ``ansible_env(home)``: this environment with the virtual environment's ``bin`` first on PATH (its ansible-playbook,
  its Python for ``localhost``), no colour, ``HOME`` in the test's own directory (Ansible's ``~/.ansible`` with it),
  no "provided hosts list is empty" warning and no ``ANSIBLE_COLLECTIONS_PATH`` of the caller's (ansible.cfg's
  ``collections_path`` finds this collection in the working tree), plus what the caller adds.
- ``offline_prefix()``: ``unshare -n`` where this machine lets us create a network namespace (root, as CI runs), so a
  render that tried to reach a cluster, a chart repository or a registry fails instead of reaching one; nothing
  where it does not (the render tests then still run, proving less about the network)."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Tuple, Union

BIN = Path(sys.executable).parent


def ansible_env(home: Path, *path_first: Union[str, Path], **extra: str) -> Dict[str, str]:
    """os.environ for an Ansible run: ``path_first`` (fakes such as helm) then the venv's bin first on PATH, no colour,
    HOME=home, no localhost warning, no ANSIBLE_COLLECTIONS_PATH; ``extra`` on top."""
    path = [*(str(p) for p in path_first), str(BIN), os.environ.get("PATH", "")]
    env = dict(os.environ, PATH=":".join(path), ANSIBLE_NOCOLOR="1", HOME=str(home), ANSIBLE_LOCALHOST_WARNING="0")
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    env.update(extra)
    return env


@functools.lru_cache(maxsize=1)
def offline_prefix() -> Tuple[str, ...]:
    """``unshare -n`` (a fresh network namespace: no interface but a down loopback) when we may create one."""
    unshare = shutil.which("unshare")
    if unshare and os.geteuid() == 0:
        probe = subprocess.run([unshare, "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return (unshare, "-n")
    return ()
