# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""checkov, an independent scanner, over rendered Kubernetes manifests.

checkov is installed from PyPI into a venv of its own under ``build/checkov-venv`` (its dependency tree pins
versions that conflict with the test venv's), once, behind a file lock; later calls return at once:

    findings = scan(rendered_dir)          # [Finding(check_id, kind, namespace, name, file, title)]
    unexplained(findings, load_exceptions())

Every failed check is either fixed in the roles or listed once in ``tests/data/checkov-exceptions.yaml`` with the
reason it does not apply; ``unexplained`` returns what is neither. checkov runs with ``--skip-download`` (it would
otherwise fetch guidelines from its vendor's API; the test machines have no route there) and only its
``kubernetes`` framework: the Helm values files in the render directory are not Kubernetes objects.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Sequence

import yaml

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "build" / "checkov-venv"
LOCK = ROOT / "build" / "checkov-venv.lock"
CHECKOV_VERSION = "3.3.30"
EXCEPTIONS = ROOT / "tests" / "data" / "checkov-exceptions.yaml"
_STAMP = VENV / ".gpu-ops-ready"


@dataclass(frozen=True)
class Finding:
    check_id: str
    kind: str
    namespace: str
    name: str
    file: str
    title: str

    def __str__(self) -> str:
        return f"{self.check_id} {self.kind} {self.namespace}/{self.name} ({self.file}): {self.title}"


@dataclass(frozen=True)
class Waiver:
    check_id: str
    kinds: tuple[str, ...]
    name: re.Pattern[str]
    namespace: re.Pattern[str]
    reason: str

    def covers(self, finding: Finding) -> bool:
        return (finding.check_id == self.check_id and (not self.kinds or finding.kind in self.kinds)
                and self.name.fullmatch(finding.name) is not None and self.namespace.fullmatch(finding.namespace) is not None)


def ensure_checkov() -> Path:
    """Build ``build/checkov-venv`` with checkov ``CHECKOV_VERSION`` once; return the ``checkov`` executable."""
    want = f"checkov=={CHECKOV_VERSION} {sys.version_info[:2]}\n"
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (_STAMP.is_file() and _STAMP.read_text() == want):
                subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, capture_output=True,
                               text=True, timeout=300)
                pip = subprocess.run(
                    [str(VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", f"checkov=={CHECKOV_VERSION}"],
                    capture_output=True, text=True, timeout=1200, check=False,
                )
                if pip.returncode != 0:
                    raise RuntimeError(f"pip install checkov=={CHECKOV_VERSION} failed:\n{pip.stdout[-3000:]}{pip.stderr[-3000:]}")
                _STAMP.write_text(want)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return VENV / "bin" / "checkov"


def _resource_parts(resource: str) -> tuple[str, str, str]:
    """checkov names a Kubernetes resource ``Kind.namespace.name`` (``Kind.name`` when cluster scoped); the
    pods it derives for its NetworkPolicy check are ``Pod.namespace.<labels>``."""
    kind, rest = resource.split(".", 1) if "." in resource else (resource, "")
    namespace, name = rest.split(".", 1) if "." in rest else (rest, "")
    if not name:
        return kind, "", namespace
    return kind, namespace, name


def parse_report(report: Any, base: Path) -> List[Finding]:
    """The failed checks of checkov's JSON report (one framework: an object; several: a list of them)."""
    reports = report if isinstance(report, list) else [report]
    findings: List[Finding] = []
    for part in reports:
        if not isinstance(part, dict) or part.get("check_type") != "kubernetes":
            continue
        summary = part.get("summary", {})
        if summary.get("parsing_errors"):
            raise RuntimeError(f"checkov could not parse {summary['parsing_errors']} file(s) under {base}")
        for failed in part.get("results", {}).get("failed_checks", []):
            kind, namespace, name = _resource_parts(failed["resource"])
            findings.append(Finding(failed["check_id"], kind, namespace, name, failed.get("file_path", "").lstrip("/"),
                                    failed.get("check_name", "")))
    return sorted(set(findings), key=str)


def scan(directory: Path) -> List[Finding]:
    """Run checkov's kubernetes framework over every manifest under ``directory``."""
    checkov = ensure_checkov()
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE", CHECKOV_RUN_SCA_PACKAGE_SCAN_V2="false", LOG_LEVEL="ERROR")
    proc = subprocess.run(
        [str(checkov), "--directory", str(directory), "--framework", "kubernetes", "--skip-download", "--quiet",
         "--compact", "--output", "json"],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )
    # exit 1: some checks failed; anything else but 0 is checkov itself failing
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise RuntimeError(f"checkov exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return parse_report(json.loads(proc.stdout), directory)


def load_exceptions(path: Path = EXCEPTIONS) -> List[Waiver]:
    """The listed exceptions: ``check``, optional ``kinds``, ``names`` and ``namespaces`` (regular expressions for the
    whole name and namespace) and ``reason`` (required: why the check does not apply)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    entries: List[Waiver] = []
    seen: set[tuple[str, str, str]] = set()
    for i, raw in enumerate(data.get("exceptions", [])):
        reason = str(raw.get("reason", "")).strip()
        if not re.fullmatch(r"CKV2?_K8S_\d+", str(raw.get("check", ""))) or len(reason) < 40:
            raise ValueError(f"{path}: entry {i}: needs a CKV_K8S_/CKV2_K8S_ check id and a reason (40+ characters)")
        key = (raw["check"], str(raw.get("names", ".*")), str(raw.get("namespaces", ".*")))
        if key in seen:
            raise ValueError(f"{path}: entry {i}: {key} is listed twice")
        seen.add(key)
        entries.append(Waiver(raw["check"], tuple(raw.get("kinds", ())), re.compile(str(raw.get("names", ".*"))),
                              re.compile(str(raw.get("namespaces", ".*"))), reason))
    return entries


def unexplained(findings: Sequence[Finding], exceptions: Sequence[Waiver]) -> List[Finding]:
    return [f for f in findings if not any(e.covers(f) for e in exceptions)]


def unused(findings_by_variant: Mapping[str, Sequence[Finding]], exceptions: Sequence[Waiver]) -> List[Waiver]:
    """Exceptions no finding of any variant needs: stale entries."""
    every = [f for findings in findings_by_variant.values() for f in findings]
    return [e for e in exceptions if not any(e.covers(f) for f in every)]
