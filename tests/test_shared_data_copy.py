# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/data/shared is a byte-for-byte copy of the project's shared test data (../shared: real nvidia-smi
captures, NVIDIA's shipped mig-parted configs, CRD schemas), so a clone tests the same on any machine.
Where ../shared exists, the copy must equal it; `make sync-shared` refreshes it."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest

ROOT = Path(__file__).resolve().parents[1]
COPY = ROOT / "tests" / "data" / "shared"
ORIGIN = ROOT.parent / "shared"
PARTS = ("fixtures", "conformance")


def tree(base: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(base)): p.read_bytes() for part in PARTS for p in sorted((base / part).rglob("*")) if p.is_file()}


def test_copy_is_present() -> None:
    assert (COPY / "fixtures" / "nvidia-smi" / "h200-mig-disabled" / "nvidia-smi_mig_-lgip.txt").is_file()
    assert (COPY / "conformance" / "mig-parted" / "config-default.yaml").is_file()


@pytest.mark.skipif(not ORIGIN.is_dir(), reason=f"no shared data at {ORIGIN} to compare with (a plain clone)")
def test_copy_equals_the_shared_data() -> None:
    origin, copy = tree(ORIGIN), tree(COPY)
    assert sorted(origin) == sorted(copy), "file lists differ: run `make sync-shared`"
    differing = [name for name in origin if origin[name] != copy[name]]
    assert not differing, f"contents differ: {differing}; run `make sync-shared`"
