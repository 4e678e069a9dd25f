# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: a mig-parted layout file read on the controller.

Not a public API; may change without notice.

One reader for the ``mig_config`` lookup and the ``mig_fleet`` filter: a size cap before reading, Ansible Vault
decryption through the caller's DataLoader when it has one, then ``_mig_config.read_config`` (the strict loader and
validator ``mig_verify`` uses on the node).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence, Tuple

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError, MigConfigFile, read_config
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._strict_yaml import MAX_BYTES


def find_layout_file(term: str, search_dirs: Sequence[str]) -> Optional[str]:
    """``term`` when absolute, else the first ``<dir>/files/<term>`` or ``<dir>/<term>`` that exists (the order in which
    Ansible's ``find_file_in_search_path`` looks in a play's directory); None when none does."""
    if os.path.isabs(term):
        return os.path.normpath(term) if os.path.exists(term) else None
    for directory in search_dirs:
        for candidate in (os.path.join(directory, "files", term), os.path.join(directory, term)):
            if os.path.exists(candidate):
                return os.path.normpath(candidate)
    return None


def _read(path: str, source: str, loader: Any) -> bytes:
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise MigConfigError(f"{source}: cannot read it: {exc.strerror}") from None
    if size > MAX_BYTES:
        raise MigConfigError(f"{source}: {size} bytes, larger than the {MAX_BYTES} bytes a mig-parted config may have; is it the right file?")
    # Ansible's DataLoader hands out a decrypted temporary copy of a vault-encrypted file (and the file itself otherwise)
    real = loader.get_real_file(path, decrypt=True) if loader is not None else path
    try:
        with open(real, "rb") as fh:
            return fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise MigConfigError(f"{source}: cannot read it: {exc.strerror}") from None
    finally:
        if loader is not None:
            loader.cleanup_tmp_file(real)


def read_layout_file(path: str, source: str = "", loader: Any = None) -> Tuple[MigConfigFile, Dict[str, Any]]:
    """``(parsed, mapping)`` of the layout file at ``path``, as ``read_config`` returns them. ``loader``: an Ansible
    DataLoader, to read vault-encrypted files (its errors pass through). MigConfigError names ``source`` (default the
    path) and, where it can, the line."""
    where = source or path
    return read_config(_read(path, where, loader), where)
