# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The bad-input table (tests/data/bad_inputs/*.yaml): one table, at least 120 cases with unique ids, each file run by
a test that names it, and docs/testing.md showing every case with its message."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "bad_inputs_table.py"


def _table() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bad_inputs_table", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_at_least_120_cases_with_unique_ids() -> None:
    cases = _table().load()
    ids = Counter(case["id"] for case in cases)
    assert [i for i, n in ids.items() if n > 1] == []
    assert len(cases) >= 120, f"{len(cases)} cases"


def test_every_table_file_is_run_by_a_test() -> None:
    tests = [p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py") if p.name != Path(__file__).name]
    for table in sorted((ROOT / "tests/data/bad_inputs").glob("*.yaml")):
        assert any(f"bad_inputs/{table.name}" in text for text in tests), f"no test reads tests/data/bad_inputs/{table.name}"


def test_docs_show_the_current_table() -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
