# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A fake ``helm`` v3 for tests (no helm binary can be installed here): see README.md in this directory."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

CLI = Path(__file__).resolve().parent / "cli.py"


class FakeHelm:
    """A state directory and a ``helm`` executable in ``bin_dir`` (put it first on PATH) that answers from it."""

    def __init__(self, directory: Path, charts: List[Dict[str, Any]], python: Optional[str] = None) -> None:
        self.directory = directory
        self.bin_dir = directory / "bin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        (directory / "charts.yaml").write_text(yaml.safe_dump(charts, sort_keys=False))
        helm = self.bin_dir / "helm"
        helm.write_text(f"#!/bin/sh\nFAKE_HELM_DIR='{directory}' exec '{python or sys.executable}' '{CLI}' \"$@\"\n")
        helm.chmod(0o755)

    @property
    def helm(self) -> Path:
        return self.bin_dir / "helm"

    def releases(self) -> Dict[str, Dict[str, Any]]:
        path = self.directory / "releases.json"
        loaded: Dict[str, Dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}
        return loaded

    def set_release(self, name: str, namespace: str, chart: str, version: str, app_version: str, values: Dict[str, Any], revision: int = 1) -> None:
        """Record a release as installed (what `helm upgrade -i` leaves), without running helm."""
        releases = self.releases()
        releases[f"{namespace}/{name}"] = {"name": name, "namespace": namespace, "revision": revision, "status": "deployed",
                                           "updated": "2026-11-01 10:00:00.000000000 +0000 UTC", "chart": f"{chart}-{version}",
                                           "app_version": app_version, "values": values}
        (self.directory / "releases.json").write_text(json.dumps(releases, indent=2, sort_keys=True) + "\n")

    def calls(self) -> List[Dict[str, Any]]:
        """Every invocation so far: argv, HELM_NAMESPACE, KUBECONFIG, reproduced, rc."""
        path = self.directory / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


__all__ = ["CLI", "FakeHelm"]
