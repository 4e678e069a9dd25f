# SPDX-License-Identifier: GPL-3.0-or-later
"""Make the repository importable as ``ansible_collections.gpu_ops.mig_serving``.

The repository root is the collection root. Python needs it below a directory tree
``ansible_collections/gpu_ops/mig_serving``; a symlink under ``build/`` provides that
without copying, so tests always exercise the working tree.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = (REPO_ROOT / "tests" / "data" / "shared").resolve()
_TREE = REPO_ROOT / "build" / "pytest-collections"
_LINK = _TREE / "ansible_collections" / "gpu_ops" / "mig_serving"


def _ensure_collection_path() -> None:
    _LINK.parent.mkdir(parents=True, exist_ok=True)
    if not _LINK.is_symlink():
        if _LINK.exists():
            raise RuntimeError(f"{_LINK} exists and is not a symlink")
        os.symlink(REPO_ROOT, _LINK)
    elif _LINK.resolve() != REPO_ROOT:
        _LINK.unlink()
        os.symlink(REPO_ROOT, _LINK)
    if str(_TREE) not in sys.path:
        sys.path.insert(0, str(_TREE))


_ensure_collection_path()
