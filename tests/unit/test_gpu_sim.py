# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Tests of the GPU simulator (tests/gpu_sim): its output against the real nvidia-smi captures, its output
through our strict parser (plugins/module_utils/_nvidia_smi.py), its state rules and its mig-parted subset.

The simulator's commands run as subprocesses (Debian's /usr/bin/python3 when present, as in the containers),
each bounded by a timeout, on a state file in tmp_path.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._nvidia_smi import (
    QUERY_FIELDS,
    GpuInfo,
    ProfileInfo,
    collect,
    parse_lci,
    parse_lgi,
    parse_lgip,
    parse_lgipp,
    parse_query_gpu,
)

REPO = Path(__file__).resolve().parents[2]
SIM = REPO / "tests" / "gpu_sim"
BIN = SIM / "bin"
FIXTURES = REPO / "tests" / "data" / "shared" / "fixtures" / "nvidia-smi"
GUIDE = FIXTURES / "documented" / "a100-sxm4-40gb" / "mig-user-guide"
CONFORMANCE = REPO / "tests" / "data" / "shared" / "conformance" / "mig-parted"
SYNTHETIC_LGI = REPO / "tests" / "fixtures" / "nvidia_smi" / "h200-580-synthetic_mig_-lgi.txt"
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
TIMEOUT = 60
A100_BUS = ["00000000:07:00.0", "00000000:0F:00.0", "00000000:47:00.0", "00000000:4E:00.0"]

if not FIXTURES.is_dir() or not CONFORMANCE.is_dir():
    pytest.skip(f"the shared fixtures are missing ({FIXTURES}, {CONFORMANCE})", allow_module_level=True)


class Sim:
    """The simulator's three commands on one state file."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state = tmp_path / "state" / "state.json"
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GPU_SIM_STATE": str(self.state), "LC_ALL": "C"}

    def run(self, tool: str, *args: str, stdin: str | None = None, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [PYTHON, str(BIN / tool), *args], env=self.env, input=stdin, capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
        if ok:
            assert done.returncode == 0, f"{tool} {' '.join(args)} -> rc {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def smi(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("nvidia-smi", *args, ok=ok)

    def parted(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("nvidia-mig-parted", *args, ok=ok)

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("gpu-sim", *args)

    def init(self, model: str, count: int, driver: str | None = None) -> None:
        self.admin("init", "--model", model, "--count", str(count), *(["--driver", driver] if driver else []))

    def log(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.admin("log").stdout.splitlines()]

    def modes(self) -> list[tuple[str, str]]:
        fields = ("mig.mode.current", "mig.mode.pending")
        rows = parse_query_gpu(self.smi(f"--query-gpu={','.join(fields)}", "--format=csv,noheader").stdout, fields)
        return [(row["mig.mode.current"], row["mig.mode.pending"]) for row in rows]

    def runner(self) -> Callable[[list[str]], tuple[int, str, str]]:
        def run(argv: list[str]) -> tuple[int, str, str]:
            done = self.smi(*argv, ok=False)
            return done.returncode, done.stdout, done.stderr

        return run


@pytest.fixture
def sim(tmp_path: Path) -> Sim:
    return Sim(tmp_path)


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def miniyaml() -> ModuleType:
    if str(SIM) not in sys.path:
        sys.path.insert(0, str(SIM))
    return importlib.import_module("gpu_sim.miniyaml")


# -- byte for byte against the real captures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "capture"),
    [
        (["mig", "-lgip"], "nvidia-smi_mig_-lgip.txt"),
        (["mig", "-lgipp"], "nvidia-smi_mig_-lgipp.txt"),
        (["mig", "-lgi"], "nvidia-smi_mig_-lgi.txt"),
        (["-L"], "nvidia-smi_-L.txt"),
        (
            ["--query-gpu=index,name,uuid,pci.bus_id,mig.mode.current,mig.mode.pending,memory.total,driver_version", "--format=csv"],
            "nvidia-smi_--query-gpu.csv",
        ),
    ],
)
def test_h200_mig_disabled_equals_the_real_capture(sim: Sim, argv: list[str], capture: str) -> None:
    sim.init("H200", 1)
    assert sim.smi(*argv).stdout == read(FIXTURES / "h200-mig-disabled" / capture)


@pytest.mark.parametrize("listing", ["-lgip", "-lgipp"])
def test_a100_equals_the_mig_user_guide_tables(sim: Sim, listing: str) -> None:
    """The guide's tables are in the 79-column layout of drivers up to 560 (535.183.01 here, as the A30 capture)."""
    sim.init("A100-SXM4-40GB", 1, driver="535.183.01")
    assert sim.smi("mig", listing).stdout == read(GUIDE / f"nvidia-smi_mig_{listing}.txt")


def test_a100_on_580_is_the_guide_table_in_the_580_layout(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 1)
    text = sim.smi("mig", "-lgip").stdout
    assert {len(line) for line in text.splitlines()} == {81}
    assert parse_lgip(text) == parse_lgip(read(GUIDE / "nvidia-smi_mig_-lgip.txt"))


@pytest.mark.parametrize(
    ("argv", "capture", "rc"),
    [
        (["-cgi", "19,19,14,9"], "nvidia-smi_mig_-cgi_19,19,14,9_insufficient-resources.txt", 23),
        (["-cgi", "9,19,14,19"], "nvidia-smi_mig_-cgi_9,19,14,19.txt", 0),
        (["-cgi", "14,19,19,19,19,19"], "nvidia-smi_mig_-cgi_14,19,19,19,19,19.txt", 0),
        (["-cgi", "9,3g.20gb", "-C"], "nvidia-smi_mig_-cgi_9,3g.20gb_-C.txt", 0),
        (["-cgi", "19,19,19,19,19,19,19"], "../../a100-pcie-40gb/nvidia-smi_mig_-cgi_19x7_-i_3.txt", 0),  # R450, A100 PCIe 40GB
    ],
)
def test_create_gpu_instances_like_the_guide(sim: Sim, argv: list[str], capture: str, rc: int) -> None:
    """Placements and GI IDs follow the driver: these are the guide's own sessions, message for message."""
    sim.init("A100-SXM4-40GB", 1)
    sim.smi("-i", "0", "-mig", "1")
    done = sim.smi("mig", *argv, ok=False)
    assert (done.returncode, done.stdout) == (rc, read(GUIDE / capture))


@pytest.mark.parametrize(("profiles", "listing"), [("9,19,14,19", "3-2-1-1"), ("14,19,19,19,19,19", "2-1-1-1-1-1")])
def test_gpu_instances_listed_like_the_guide(sim: Sim, profiles: str, listing: str) -> None:
    sim.init("A100-SXM4-40GB", 1)
    sim.smi("-mig", "1")
    sim.smi("mig", "-cgi", profiles)
    assert parse_lgi(sim.smi("mig", "-lgi").stdout) == parse_lgi(read(GUIDE / f"nvidia-smi_mig_-lgi_{listing}.txt"))


def test_destroy_order_like_scaleway(sim: Sim) -> None:
    """h100-pcie-80gb/scaleway-525.125.06: -cgi 9,19,19,19 -C gives GIs 2, 7, 8, 9; -dci then -dgi walk them 7, 8, 9, 2."""
    session = FIXTURES / "documented" / "h100-pcie-80gb" / "scaleway-525.125.06"
    sim.init("A100-SXM4-40GB", 1)
    sim.smi("-mig", "1")
    created = sim.smi("mig", "-cgi", "9,19,19,19", "-C").stdout
    assert created == read(session / "nvidia-smi_mig_-cgi_9,19,19,19_-C.txt").replace("3g.40gb", "3g.20gb").replace("1g.10gb", "1g.5gb")
    destroyed = sim.smi("mig", "-dci").stdout + sim.smi("mig", "-dgi").stdout
    assert destroyed == read(session / "nvidia-smi_mig_-dci_and_-dgi.txt")


def test_h200_all_balanced_lgi_is_the_580_layout(sim: Sim) -> None:
    """The GIs of tests/fixtures/nvidia_smi/h200-580-synthetic_mig_-lgi.txt, as mig-parted's all-balanced creates them."""
    sim.init("H200", 1)
    sim.parted("apply", "-f", str(CONFORMANCE / "config-default.yaml"), "-c", "all-balanced")
    assert sim.smi("mig", "-lgi").stdout == read(SYNTHETIC_LGI)


def test_mig_enable_on_an_idle_gpu_is_immediate(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 2)
    assert sim.smi("-i", "0", "-mig", "1").stdout == read(GUIDE / "nvidia-smi_-i_0_-mig_1_dgx.txt")
    assert sim.modes() == [("enabled", "enabled"), ("disabled", "disabled")]
    assert [e["op"] for e in sim.log()] == ["init", "mig-mode"]


def test_persistence_mode_off_warns(sim: Sim) -> None:
    capture = FIXTURES / "documented" / "h100-pcie-80gb" / "user-notes-570.169" / "nvidia-smi_-i_0_-mig_1_persistence-warning.txt"
    sim.init("A100-SXM4-40GB", 1)
    sim.admin("set-persistence", "0", "off")
    assert sim.smi("-i", "0", "-mig", "1").stdout == read(capture).replace("00000000:01:00.0", A100_BUS[0])


# -- every output parses ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["580.159.04", "535.183.01"])
@pytest.mark.parametrize("model", ["A100-SXM4-40GB", "H200"])
def test_every_output_parses(sim: Sim, model: str, driver: str) -> None:
    sim.init(model, 3, driver=driver)
    steps: list[Callable[[], object]] = [
        lambda: None,
        lambda: sim.smi("-i", "0,1", "-mig", "1"),
        lambda: sim.smi("mig", "-i", "0", "-cgi", "9,19,14,19", "-C"),
        lambda: sim.smi("mig", "-i", "1", "-cgi", "0"),  # a GI without compute instances
        lambda: sim.smi("mig", "-i", "1", "-dgi"),
        lambda: sim.smi("mig", "-i", "1", "-cgi", "15,15,15,15", "-C"),
    ]
    for step in steps:
        step()
        query = parse_query_gpu(sim.smi(f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv").stdout, QUERY_FIELDS)
        assert [row["index"] for row in query] == ["0", "1", "2"]
        profiles = parse_lgip(sim.smi("mig", "-lgip").stdout)
        placements = parse_lgipp(sim.smi("mig", "-lgipp").stdout)
        assert sorted(profiles) == sorted(placements) == [0, 1, 2]
        gpu_instances = parse_lgi(sim.smi("mig", "-lgi", ok=False).stdout)
        compute_instances = parse_lci(sim.smi("mig", "-lci", ok=False).stdout)
        for gpu, cis in compute_instances.items():
            assert {ci["gpu_instance_id"] for ci in cis} <= {gi["id"] for gi in gpu_instances[gpu]}
        lines = sim.smi("-L").stdout.splitlines()
        assert all(re.fullmatch(r"GPU \d+: .+ \(UUID: GPU-[0-9a-f-]{36}\)|  MIG \S+ +Device +\d+: \(UUID: MIG-[0-9a-f-]{36}\)", line) for line in lines)
        assert sum(line.startswith("  MIG") for line in lines) == sum(len(cis) for cis in compute_instances.values())
    assert [gi["placement"] for gi in gpu_instances[1]] == [{"start": s, "size": 2} for s in (0, 2, 4, 6)]


def test_free_counts_follow_the_instances(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 1)
    sim.smi("-mig", "1")
    sim.smi("mig", "-cgi", "9")  # 3g at 4:4
    free = {p["name"]: (p["free_instances"], p["max_instances"]) for p in parse_lgip(sim.smi("mig", "-lgip").stdout)[0]}
    assert free == {
        "1g.5gb": (4, 7),
        "1g.5gb+me": (1, 1),
        "1g.10gb": (2, 4),
        "2g.10gb": (2, 3),
        "3g.20gb": (1, 2),
        "4g.20gb": (1, 1),
        "7g.40gb": (0, 1),
    }


# -- collect() through the simulator ------------------------------------------------------------------------------


def _a100_profiles() -> list[ProfileInfo]:
    """The guide's A100-SXM4-40GB profiles and placements, every instance taken (Free 0)."""
    profiles = parse_lgip(read(GUIDE / "nvidia-smi_mig_-lgip.txt"))[0]
    placements = parse_lgipp(read(GUIDE / "nvidia-smi_mig_-lgipp.txt"))[0]
    for profile in profiles:
        profile["placements"] = placements[profile["id"]]
        profile["free_instances"] = 0
    return profiles


def _expected_a100(index: int, gis: list[tuple[int, int, str, int, int]]) -> GpuInfo:
    """(GI id, profile id, name, start, size) -> GpuInfo with one full compute instance per GI."""
    ci_profile = {"1g": 0, "2g": 1, "3g": 2}
    return {
        "index": index,
        "name": "NVIDIA A100-SXM4-40GB",
        "uuid": f"GPU-{index:08x}-1111-2222-3333-444444444444",
        "pci_bus_id": f"00000000:{['07', '0F', '47', '4E', '87', '90', 'B7', 'BD'][index]}:00.0",
        "pci_device_id": "0x20B010DE",
        "pci_subsystem_id": "0x134F10DE",
        "mig_mode_current": "enabled",
        "mig_mode_pending": "enabled",
        "gpu_instances": [
            {"id": gi, "profile_id": pid, "profile": name, "placement": {"start": start, "size": size}} for gi, pid, name, start, size in sorted(gis)
        ],
        "compute_instances": [
            {"gpu_instance_id": gi[0], "id": 0, "profile_id": ci_profile[gi[2][:2]], "profile": gi[2]} for gi in sorted(gis)
        ],
        "supported_profiles": _a100_profiles(),
    }


def test_collect_after_all_1g_5gb(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 8)
    applied = sim.parted("apply", "-f", str(CONFORMANCE / "config-default.yaml"), "-c", "all-1g.5gb")
    assert applied.stdout == "MIG configuration applied successfully\n"
    gpus = collect(sim.runner())
    assert sum(len(gpu["compute_instances"]) for gpu in gpus) == 56
    expected = [_expected_a100(i, [(7 + s, 19, "1g.5gb", s, 1) for s in range(7)]) for i in range(8)]
    assert gpus == expected


def test_collect_after_all_balanced(sim: Sim) -> None:
    """GIs 9 (2:1), 10 (3:1), 3 (0:2), 2 (4:4): GPU 0 of documented/a100-sxm4-80gb/dcgm-issue138, mig-parted's all-balanced."""
    sim.init("A100-SXM4-40GB", 8)
    sim.parted("apply", "-f", str(CONFORMANCE / "config-default.yaml"), "-c", "all-1g.5gb")
    sim.parted("apply", "-f", str(CONFORMANCE / "config-default.yaml"), "-c", "all-balanced")
    gis = [(9, 19, "1g.5gb", 2, 1), (10, 19, "1g.5gb", 3, 1), (3, 14, "2g.10gb", 0, 2), (2, 9, "3g.20gb", 4, 4)]
    assert collect(sim.runner()) == [_expected_a100(i, gis) for i in range(8)]
    dcgm = parse_lgi(read(FIXTURES / "documented" / "a100-sxm4-80gb" / "dcgm-issue138" / "nvidia-smi_mig_-lgi_multi-gpu_EXCERPT.txt"))[0]
    ours = parse_lgi(sim.smi("mig", "-lgi", "-i", "0").stdout)[0]
    assert [(gi["id"], gi["profile_id"], gi["placement"]) for gi in ours] == [(gi["id"], gi["profile_id"], gi["placement"]) for gi in dcgm]


# -- state rules --------------------------------------------------------------------------------------------------


def test_busy_gpu_keeps_mode_pending_and_refuses_reset(sim: Sim) -> None:
    capture = FIXTURES / "documented" / "a100-sxm4-80gb" / "dgx-station-kr-notes" / "nvidia-smi_-i_0_-mig_1_pending-in-use.txt"
    sim.init("A100-SXM4-40GB", 2)
    sim.admin("set-busy", "0", "--pid", "4242", "--name", "tritonserver")
    done = sim.smi("-i", "0", "-mig", "1")
    assert done.stdout == read(capture).replace("00000000:01:00.0", A100_BUS[0])
    assert "pid 4242 (tritonserver)" in done.stderr
    assert sim.modes()[0] == ("disabled", "enabled")
    reset = sim.smi("--gpu-reset", "-i", "0", ok=False)
    assert reset.returncode != 0
    assert reset.stdout.startswith(f"The following GPUs could not be reset:\n  GPU {A100_BUS[0]}: In use by another client\n")
    assert "pid 4242 (tritonserver)" in reset.stderr
    assert sim.modes()[0] == ("disabled", "enabled")
    sim.admin("clear-busy", "0")
    assert sim.smi("-r", "-i", "0").stdout == f"GPU {A100_BUS[0]} was successfully reset.\nAll done.\n"
    assert sim.modes() == [("enabled", "enabled"), ("disabled", "disabled")]


def test_gpu_that_cannot_be_reset_stays_pending_until_boot(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 1)
    sim.admin("set-resettable", "0", "off")
    bus = "00000000:00:03.0"  # the passthrough VM of the guide
    pending = sim.smi("-i", "0", "-mig", "1").stdout
    assert pending == read(GUIDE / "nvidia-smi_-i_0_-mig_1_passthrough-pending.txt").replace(bus, A100_BUS[0])
    reset = sim.smi("--gpu-reset", "-i", "0", ok=False)
    assert (reset.returncode, reset.stdout) == (3, read(GUIDE / "nvidia-smi_--gpu-reset_passthrough.txt").replace(bus, A100_BUS[0]))
    assert sim.modes() == [("disabled", "enabled")]
    sim.admin("boot")
    assert sim.modes() == [("enabled", "enabled")]
    assert sim.log()[-1]["op"] == "boot"


def test_boot_clears_instances_and_applies_pending(sim: Sim) -> None:
    sim.init("H200", 2)
    sim.smi("-mig", "1")
    sim.smi("mig", "-cgi", "19,19", "-C")
    assert len(parse_lci(sim.smi("mig", "-lci").stdout)[1]) == 2
    sim.admin("set-busy", "1", "--pid", "7", "--name", "dcgm")
    sim.smi("-i", "1", "-mig", "0")  # pending: GPU 1 is held
    assert sim.modes() == [("enabled", "enabled"), ("enabled", "disabled")]
    sim.admin("boot")
    assert sim.modes() == [("enabled", "enabled"), ("disabled", "disabled")]
    lgi = sim.smi("mig", "-lgi", ok=False)
    assert (lgi.returncode, lgi.stdout) == (6, "No GPU instances found: Not Found\n")
    assert json.loads(sim.admin("show").stdout)["gpus"][1]["busy"] == []
    entry = sim.log()[-1]
    assert entry["op"] == "boot"
    assert "GPU 0: 2 GPU instance(s) lost" in entry["detail"]


def test_destroying_a_gpu_instance_with_compute_instances_fails(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 1)
    sim.smi("-mig", "1")
    sim.smi("mig", "-cgi", "9", "-C")
    done = sim.smi("mig", "-dgi", ok=False)
    assert (done.returncode, done.stdout) == (19, "Unable to destroy GPU instance ID  2 from GPU  0: In use by another client\n"
                                              "Failed to destroy GPU instances: In use by another client\n")  # fmt: skip
    sim.smi("mig", "-dci", "-gi", "2")
    assert sim.smi("mig", "-dgi", "-gi", "2").stdout == "Successfully destroyed GPU instance ID  2 from GPU  0\n"


def test_query_fields_and_errors(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 2)
    done = sim.smi("--query-gpu=index,memory.total,driver_version,pci.device_id", "--format=csv,noheader,nounits")
    assert done.stdout == "0, 40960, 580.159.04, 0x20B010DE\n1, 40960, 580.159.04, 0x20B010DE\n"
    bad = sim.smi("--query-gpu=index,clocks.bogus", "--format=csv", ok=False)
    assert (bad.returncode, bad.stdout) == (2, 'Field "clocks.bogus" is not a valid field to query.\n\n')
    one = sim.smi("-i", "00000000:0F:00.0", "--query-gpu=index", "--format=csv,noheader")
    assert one.stdout == "1\n"
    unknown = sim.smi("-q", ok=False)
    assert (unknown.returncode, unknown.stdout) == (2, "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n")


def test_without_state_the_driver_is_not_loaded(sim: Sim) -> None:
    done = sim.smi("-L", ok=False)
    assert done.returncode == 9
    assert done.stdout.startswith("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")


def test_concurrent_calls_are_serialised(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 8)
    sim.smi("-mig", "1")
    command = [PYTHON, str(BIN / "nvidia-smi"), "mig", "-i", "0", "-cgi", "19", "-C"]
    readers = [[PYTHON, str(BIN / "nvidia-smi"), "mig", "-lgip"]] * 4
    procs = [subprocess.Popen(c, env=sim.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in [command] * 7 + readers]
    try:
        results = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), results
    gis = parse_lgi(sim.smi("mig", "-lgi").stdout)[0]
    assert sorted(gi["id"] for gi in gis) == list(range(7, 14))
    assert sum(e["op"] == "create-ci" for e in sim.log()) == 7


# -- nvidia-mig-parted ------------------------------------------------------------------------------------------


def _config(sim: Sim, text: str) -> str:
    path = sim.tmp / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_apply_twice_the_second_changes_nothing(sim: Sim) -> None:
    config = str(CONFORMANCE / "config-default.yaml")
    sim.init("A100-SXM4-40GB", 8)
    assert sim.parted("assert", "-f", config, "-c", "all-1g.5gb", ok=False).returncode == 1
    sim.parted("apply", "-f", config, "-c", "all-1g.5gb")
    after_first = sim.log()
    assert sum(e["op"] == "create-gi" for e in after_first) == 56
    assert not any(e["op"] == "reset" for e in after_first)  # idle bare metal: the mode change was immediate
    assert sim.parted("apply", "-f", config, "-c", "all-1g.5gb").stdout == "MIG configuration applied successfully\n"
    assert sim.log() == after_first
    assert sim.parted("assert", "-f", config, "-c", "all-1g.5gb").stdout == "Selected MIG configuration currently applied\n"
    failed = sim.parted("assert", "-f", config, "-c", "all-balanced", ok=False)
    assert failed.returncode == 1
    assert 'level=fatal msg="Assertion failure: selected configuration not currently applied"' in failed.stderr
    assert sim.parted("assert", "-f", config, "-c", "all-disabled", "--mode-only", ok=False).returncode == 1
    assert sim.parted("assert", "-f", config, "-c", "all-balanced", "-m").stdout == "Selected MIG mode settings from configuration currently applied\n"
    assert sim.parted("assert", "-f", config, "-c", "all-balanced", "-a").stdout == "Selected MIG configuration is valid\n"
    assert sim.log() == after_first


def test_apply_refused_on_a_busy_gpu(sim: Sim) -> None:
    config = str(CONFORMANCE / "config-default.yaml")
    sim.init("A100-SXM4-40GB", 4)
    sim.admin("set-busy", "2", "--pid", "4242", "--name", "tritonserver")
    done = sim.parted("apply", "-f", config, "-c", "all-1g.5gb", ok=False)
    assert done.returncode == 1
    assert "Error applying MIG configuration with hooks: error resetting all GPUs: exit status 19" in done.stderr
    assert f"GPU 2 ({A100_BUS[2]}) is held by pid 4242 (tritonserver)" in done.stderr
    assert sim.modes() == [("enabled", "enabled")] * 2 + [("disabled", "enabled")] + [("enabled", "enabled")]
    sim.admin("clear-busy", "2")
    sim.parted("apply", "-f", config, "-c", "all-1g.5gb")
    sim.parted("assert", "-f", config, "-c", "all-1g.5gb")
    # MIG already on, another layout wanted, but the GPU is held: clearing its instances fails.
    sim.admin("set-busy", "1", "--pid", "77", "--name", "python3")
    before = sim.log()
    busy = sim.parted("apply", "-f", config, "-c", "all-balanced", ok=False)
    assert busy.returncode == 1
    assert "In use by another client" in busy.stderr
    assert f"GPU 1 ({A100_BUS[1]}) is held by pid 77 (python3)" in busy.stderr
    assert not any(e["gpu"] == 1 and e["op"].startswith(("destroy", "create")) for e in sim.log()[len(before) :])


def test_apply_on_a_gpu_that_cannot_be_reset_needs_a_boot(sim: Sim) -> None:
    config = str(CONFORMANCE / "config-default.yaml")
    sim.init("H200", 2)
    sim.admin("set-resettable", "all", "off")
    done = sim.parted("apply", "-f", config, "-c", "all-balanced", ok=False)
    assert done.returncode == 1
    assert f"Resetting GPU {'00000000:00:06.0'} is not supported." in done.stderr
    assert sim.modes() == [("disabled", "enabled")] * 2
    sim.admin("boot")
    sim.parted("apply", "-f", config, "-c", "all-balanced")
    sim.parted("assert", "-f", config, "-c", "all-balanced")


def test_device_filter_selects_entries_per_model(sim: Sim) -> None:
    config = str(CONFORMANCE / "config-default.yaml")
    sim.init("A100-SXM4-40GB", 2)
    sim.parted("apply", "-f", config, "-c", "all-1g.10gb")  # the A100-40GB entry: 4 x 1g.10gb
    assert [len(gis) for gis in parse_lgi(sim.smi("mig", "-lgi").stdout).values()] == [4, 4]
    sim.init("H200", 2)
    sim.parted("apply", "-f", config, "-c", "all-1g.10gb")  # no entry for 0x233510DE: nothing to do
    assert sim.modes() == [("disabled", "disabled")] * 2
    assert sim.parted("assert", "-f", config, "-c", "all-1g.10gb", ok=False).returncode == 1


def test_custom_config_devices_lists(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 8)
    sim.parted("apply", "-f", str(CONFORMANCE / "examples-config.yaml"), "-c", "custom-config")
    assert sim.modes() == [("disabled", "disabled")] * 4 + [("enabled", "enabled")] * 4
    counts = {gpu: len(gis) for gpu, gis in parse_lgi(sim.smi("mig", "-lgi").stdout).items()}
    assert counts == {4: 7, 5: 3, 6: 2, 7: 4}


def test_infeasible_layout_fails(sim: Sim) -> None:
    head = "version: v1\nmig-configs:\n  too-much:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n"
    path = _config(sim, head + '        "3g.20gb": 2\n        "2g.10gb": 1\n')
    sim.init("A100-SXM4-40GB", 1)
    done = sim.parted("apply", "-f", path, "-c", "too-much", ok=False)
    assert done.returncode == 1
    assert "Error creating GPU instance for '2g.10gb': Insufficient Resources" in done.stderr
    assert "error setting MIGConfig: error attempting multiple config orderings: all orderings failed" in done.stderr
    lgi = sim.smi("mig", "-lgi", ok=False)
    assert lgi.stdout == "No GPU instances found: Not Found\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: v2\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n", "unknown version: v2"),
        ("version: v1\nmig-configs:\n  a:\n    - devices: some\n      mig-enabled: false\n", "invalid string input for 'devices': some"),
        ("version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n", "missing required field 'mig-devices'"),
        ("version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: false\n      extra: 1\n", "unexpected field: extra"),
        (
            "version: v1\nmig-configs:\n  a:\n    - devices: all\n      mig-enabled: true\n      mig-devices:\n        5gb: 1\n",
            "error validating values in 'mig-devices' field: invalid format for '5gb'",
        ),
    ],
)
def test_invalid_configs_are_rejected(sim: Sim, text: str, message: str) -> None:
    sim.init("A100-SXM4-40GB", 1)
    done = sim.parted("apply", "-f", _config(sim, text), "-c", "a", ok=False)
    assert done.returncode == 1
    assert "Error parsing config file: unmarshal error: " + message in done.stderr
    assert [e["op"] for e in sim.log()] == ["init"]


def test_hooks_run_in_order_with_the_selected_config(sim: Sim) -> None:
    trace = sim.tmp / "trace"
    hooks = sim.tmp / "hooks.yaml"
    entries = "".join(
        f'  {name}:\n  - workdir: "{sim.tmp}"\n    command: "/bin/bash"\n    args: ["-c", "echo {name} $MIG_PARTED_SELECTED_CONFIG $FROM_HOOK >> trace"]\n'
        f"    envs:\n      FROM_HOOK: yes-it-is\n"
        for name in ("apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit")
    )
    hooks.write_text("version: v1\nhooks:\n" + entries, encoding="utf-8")
    config = str(CONFORMANCE / "config-default.yaml")
    sim.init("H200", 1)
    sim.parted("apply", "-f", config, "-c", "all-balanced", "--hooks-file", str(hooks))
    sim.parted("apply", "-f", config, "-c", "all-balanced", "-k", str(hooks))
    assert read(trace).splitlines() == [
        f"{name} all-balanced yes-it-is" for name in ("apply-start", "pre-apply-mode", "pre-apply-config", "apply-exit", "apply-start", "apply-exit")
    ]


def test_failing_apply_start_hook_stops_apply(sim: Sim) -> None:
    hooks = sim.tmp / "hooks.yaml"
    hooks.write_text('version: v1\nhooks:\n  apply-start:\n  - command: "/bin/sh"\n    args: ["-c", "exit 3"]\n', encoding="utf-8")
    sim.init("H200", 1)
    done = sim.parted("apply", "-f", str(CONFORMANCE / "config-default.yaml"), "-c", "all-balanced", "-k", str(hooks), ok=False)
    assert done.returncode == 1
    assert "error running apply-start hook: exit status 3" in done.stderr
    assert [e["op"] for e in sim.log()] == ["init"]


def test_export_round_trip(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 8)
    sim.parted("apply", "-f", str(CONFORMANCE / "examples-config.yaml"), "-c", "custom-config")
    exported = sim.parted("export").stdout
    assert yaml.safe_load(exported) == miniyaml().loads(exported)
    assert yaml.safe_load(exported)["mig-configs"]["current"] == [
        {"devices": [0, 1, 2, 3], "mig-enabled": False, "mig-devices": {}},
        {"devices": [4], "mig-enabled": True, "mig-devices": {"1g.5gb": 7}},
        {"devices": [5], "mig-enabled": True, "mig-devices": {"2g.10gb": 3}},
        {"devices": [6], "mig-enabled": True, "mig-devices": {"3g.20gb": 2}},
        {"devices": [7], "mig-enabled": True, "mig-devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}},
    ]
    before = sim.log()
    sim.parted("apply", "-f", _config(sim, exported), "-c", "current")
    assert sim.log() == before
    assert json.loads(sim.parted("export", "-o", "json", "-l", "mine").stdout)["mig-configs"]["mine"][0]["devices"] == [0, 1, 2, 3]
    sim.init("H200", 2)
    all_disabled = {"devices": "all", "mig-enabled": False, "mig-devices": {}}
    assert yaml.safe_load(sim.parted("export").stdout) == {"version": "v1", "mig-configs": {"current": [all_disabled]}}


def test_version(sim: Sim) -> None:
    assert sim.parted("--version").stdout == "nvidia-mig-parted version 0.13.0 (simulated)\n"


# Every op a MIG apply or a GPU reset can write to the ops log (README "State"): none of them after a point in
# the log proves that no apply and no reset happened since.
GPU_CHANGING_OPS = {"mig-mode", "reset", "create-gi", "create-ci", "destroy-gi", "destroy-ci"}


def test_apply_and_reset_write_only_the_documented_ops(sim: Sim) -> None:
    config = str(CONFORMANCE / "config-default.yaml")
    sim.init("A100-SXM4-40GB", 2)
    sim.parted("apply", "-f", config, "-c", "all-1g.5gb")
    sim.parted("apply", "-f", config, "-c", "all-balanced")
    sim.admin("set-busy", "1", "--pid", "7", "--name", "x")
    sim.parted("apply", "-f", config, "-c", "all-disabled", ok=False)  # GPU 1 busy: mode pending, reset refused
    sim.admin("clear-busy", "1")
    sim.smi("-r")
    sim.parted("apply", "-f", config, "-c", "all-disabled")
    harness = {"init", "set-busy", "clear-busy"}
    ops = [e["op"] for e in sim.log()]
    assert set(ops) - harness <= GPU_CHANGING_OPS
    assert {"mig-mode", "reset", "create-gi", "create-ci", "destroy-gi", "destroy-ci"} <= set(ops)
    readme = read(SIM / "README.md")
    for op in GPU_CHANGING_OPS:
        assert f"`{op}`" in readme


def test_query_compute_apps(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 4)
    fields = "--query-compute-apps=pid,process_name,gpu_uuid,gpu_bus_id,used_memory"
    assert sim.smi(fields, "--format=csv").stdout == "pid, process_name, gpu_uuid, gpu_bus_id, used_gpu_memory [MiB]\n"
    assert sim.smi(fields, "--format=csv,noheader").stdout == ""
    sim.admin("set-busy", "2", "--pid", "4242", "--name", "tritonserver", "--used-mib", "1836")
    sim.admin("set-busy", "0", "--pid", "77", "--name", "/usr/bin/python3")
    sim.admin("set-busy", "2", "--pid", "78", "--name", "dcgm")
    assert sim.smi(fields, "--format=csv").stdout.splitlines() == [
        "pid, process_name, gpu_uuid, gpu_bus_id, used_gpu_memory [MiB]",
        f"77, /usr/bin/python3, GPU-00000000-1111-2222-3333-444444444444, {A100_BUS[0]}, 0 MiB",
        f"4242, tritonserver, GPU-00000002-1111-2222-3333-444444444444, {A100_BUS[2]}, 1836 MiB",
        f"78, dcgm, GPU-00000002-1111-2222-3333-444444444444, {A100_BUS[2]}, 0 MiB",
    ]
    assert sim.smi("--query-compute-apps=used_gpu_memory,pid", "--format=csv,noheader,nounits", "-i", "2").stdout == "1836, 4242\n0, 78\n"
    bad = sim.smi("--query-compute-apps=pid,nope", "--format=csv", ok=False)
    assert (bad.returncode, bad.stdout) == (2, 'Field "nope" is not a valid field to query.\n\n')
    assert sim.smi("--query-compute-apps=pid", ok=False).returncode == 2  # --format is required
    sim.admin("clear-busy", "all")
    assert sim.smi("--query-compute-apps=pid", "--format=csv,noheader").stdout == ""


def test_injected_apply_failure_changes_nothing(sim: Sim) -> None:
    trace = sim.tmp / "trace"
    hooks = sim.tmp / "hooks.yaml"
    entries = "".join(
        f'  {name}:\n  - workdir: "{sim.tmp}"\n    command: "/bin/sh"\n    args: ["-c", "echo {name} >> trace"]\n'
        for name in ("apply-start", "pre-apply-mode", "apply-exit")
    )
    hooks.write_text("version: v1\nhooks:\n" + entries, encoding="utf-8")
    config = str(CONFORMANCE / "config-default.yaml")
    sim.init("A100-SXM4-40GB", 2)
    sim.admin("set-apply-failure", "on", "--message", "error setting MIGConfig: boom")
    assert sim.log()[-1]["op"] == "set-apply-failure"
    before = sim.admin("show").stdout
    failed = sim.parted("apply", "-f", config, "-c", "all-1g.5gb", "-k", str(hooks), ok=False)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert re.fullmatch(r'time="[^"]+" level=fatal msg="Error applying MIG configuration with hooks: error setting MIGConfig: boom"\n', failed.stderr)
    assert read(trace).split() == ["apply-start", "apply-exit"]  # after apply-start, before any GPU change
    entries_after = sim.log()
    assert entries_after[-1]["op"] == "apply-failure"
    assert not {e["op"] for e in entries_after} & GPU_CHANGING_OPS
    shown = json.loads(sim.admin("show").stdout)
    assert json.loads(before)["gpus"] == shown["gpus"]
    assert sim.parted("apply", "-f", config, "-c", "all-disabled", "-m", ok=False).returncode == 1  # every apply fails
    assert sim.parted("assert", "-f", config, "-c", "all-disabled").returncode == 0  # assert and export are unaffected
    assert sim.parted("export").returncode == 0
    sim.admin("set-apply-failure", "off")
    assert sim.log()[-1]["op"] == "set-apply-failure"
    sim.parted("apply", "-f", config, "-c", "all-1g.5gb")
    assert sim.parted("assert", "-f", config, "-c", "all-1g.5gb").returncode == 0


def test_hang_switch_makes_matching_nvidia_smi_calls_sleep(sim: Sim) -> None:
    """gpu-sim set-hang: nvidia-smi on a hung driver. Matching calls sleep (then answer as usual), others do not;
    the state lock is not held while one sleeps; a killed sleeper leaves the state as it was."""
    sim.init("H200", 1)
    sim.admin("set-hang", "on", "--match", "mig -lgip", "--seconds", "2")
    entry = sim.log()[-1]
    assert (entry["op"], entry["detail"]) == ("set-hang", "on: nvidia-smi calls matching 'mig -lgip' sleep 2 s")
    started = time.monotonic()
    listed = sim.smi("-L")
    assert time.monotonic() - started < 2
    assert listed.stdout.startswith("GPU 0: NVIDIA H200")
    started = time.monotonic()
    slow = sim.smi("mig", "-lgip")
    assert time.monotonic() - started >= 2
    assert slow.stdout == read(FIXTURES / "h200-mig-disabled" / "nvidia-smi_mig_-lgip.txt")
    assert "gpu-sim: nvidia-smi mig -lgip: hanging for 2 s (gpu-sim set-hang)" in slow.stderr
    entry = sim.log()[-1]
    assert (entry["op"], entry["detail"]) == ("hang", "nvidia-smi mig -lgip: sleeping 2 s")

    sim.admin("set-hang", "on", "--seconds", "600")  # every call, "forever" for a test
    hung = subprocess.Popen([PYTHON, str(BIN / "nvidia-smi"), "--query-gpu=index", "--format=csv"], env=sim.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            hung.wait(timeout=1.5)
        before = sim.admin("show").stdout  # the lock is free while it sleeps
    finally:
        hung.kill()
        hung.communicate(timeout=TIMEOUT)
    assert hung.returncode == -9
    assert sim.admin("show").stdout == before
    sim.admin("set-hang", "off")
    assert sim.log()[-1]["detail"] == "off"
    started = time.monotonic()
    assert sim.smi("mig", "-lgip").stdout.startswith("+")
    assert time.monotonic() - started < 2
    assert sim.run("gpu-sim", "set-hang", "on", "--seconds", "0", ok=False).returncode != 0


def test_generate_config_covers_the_gpus_present(sim: Sim) -> None:
    sim.init("H200", 2)
    generated = sim.parted("generate-config").stdout
    assert yaml.safe_load(generated) == miniyaml().loads(generated)
    configs = yaml.safe_load(generated)["mig-configs"]
    assert {"all-disabled", "all-enabled", "all-1g.18gb", "all-7g.141gb"} <= set(configs)
    assert configs["all-1g.18gb"] == [{"device-filter": ["0x233510DE"], "devices": "all", "mig-enabled": True, "mig-devices": {"1g.18gb": 7}}]
    target = sim.tmp / "generated.yaml"
    assert sim.parted("generate-config", "-f", str(target)).stdout == ""
    assert read(target) == generated
    sim.parted("apply", "-f", str(target), "-c", "all-3g.71gb")
    assert sim.parted("assert", "-f", str(target), "-c", "all-3g.71gb").returncode == 0


def test_reset_available(sim: Sim) -> None:
    sim.init("A100-SXM4-40GB", 2)
    before = sim.log()
    assert sim.run("gpu-sim", "reset-available").returncode == 0
    sim.admin("set-resettable", "1", "off")
    refused = sim.run("gpu-sim", "reset-available", ok=False)
    assert refused.returncode == 1
    assert "GPU 1 (00000000:0F:00.0) cannot be reset" in refused.stdout
    assert len(sim.log()) == len(before) + 1  # only set-resettable was logged


def test_compute_capability(sim: Sim) -> None:
    sim.init("H200", 1)
    assert sim.smi("--query-gpu=compute_cap", "--format=csv").stdout == "compute_cap\n9.0\n"
    sim.init("A100-SXM4-40GB", 1)
    assert sim.smi("--query-gpu=compute_cap", "--format=csv,noheader").stdout == "8.0\n"


# -- the YAML subset ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONFORMANCE.glob("*.yaml")), ids=lambda p: p.name)
def test_yaml_subset_reads_the_conformance_files_like_pyyaml(path: Path) -> None:
    text = read(path)
    assert miniyaml().loads(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    "text",
    [
        'a:\n  b: 1\n  c: [0, 1, "x y", \'it\'\'s\']\n  d: {}\n  e: {f: true, g: ~}\n# comment\nh:\n- 1\n- k: v  # trailing\n  l: null\n',
        "x: 'a # not a comment'\nw: \"\\u00e9\\t\"\nz: plain text with spaces\n",
        "---\nempty:\nnext: -5\nlist:\n  -\n  - [[1], {a: [2]}]\n",
    ],
)
def test_yaml_subset_agrees_with_pyyaml_on_samples(text: str) -> None:
    assert miniyaml().loads(text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a:\n\tb: 1\n", "tab in indentation"),
        ("a: &x 1\nb: *x\n", "unsupported YAML syntax"),
        ("a: yes\n", "ambiguous"),
        ("device-filter: 0x20B010DE\n", "ambiguous"),
        ("a: 1.5\n", "ambiguous"),
        ("a: 1\na: 2\n", "duplicate key"),
        ("a: |\n  text\n", "unsupported YAML syntax"),
        ("a: [1, 2\n", "flow collection"),
        ("a: 1\n b: 2\n", "line 2"),
        ("a: 'open\n", "unterminated"),
        ("a: 1\n---\nb: 2\n", "more than one document"),
    ],
)
def test_yaml_subset_rejects_what_it_does_not_support(text: str, fragment: str) -> None:
    module = miniyaml()
    with pytest.raises(module.YamlError) as info:
        module.loads(text)
    assert fragment in str(info.value)


# -- install.sh ---------------------------------------------------------------------------------------------------


def test_install_into_a_root_filesystem(sim: Sim, tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    done = subprocess.run(["sh", str(SIM / "install.sh"), str(root)], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    unit = read(root / "usr" / "lib" / "systemd" / "system" / "gpu-sim-boot.service")
    expected = ("Type=oneshot", "DefaultDependencies=no", "After=local-fs.target", "Before=sysinit.target nvidia-mig-manager.service shutdown.target")
    for line in (*expected, "ExecStart=/usr/bin/gpu-sim boot"):
        assert line in unit.splitlines()
    link = root / "etc" / "systemd" / "system" / "sysinit.target.wants" / "gpu-sim-boot.service"
    assert os.readlink(link) == "/usr/lib/systemd/system/gpu-sim-boot.service"
    for tool in ("nvidia-smi", "gpu-sim"):
        assert os.access(root / "usr" / "bin" / tool, os.X_OK)
        assert read(root / "usr" / "bin" / tool).startswith("#!/usr/bin/python3\n")
    assert not (root / "usr" / "bin" / "nvidia-mig-parted").exists()  # it comes from the nvidia-mig-manager .deb
    # The installed copy runs from its own tree (../lib/gpu-sim), not from the source.
    moved = tmp_path / "moved"
    shutil.copytree(root, moved, symlinks=True)
    installed = [PYTHON, str(moved / "usr" / "bin" / "gpu-sim"), "init", "--model", "H200", "--count", "1"]
    assert subprocess.run(installed, env=sim.env, capture_output=True, text=True, timeout=TIMEOUT, check=False).returncode == 0
    listing = [PYTHON, str(moved / "usr" / "bin" / "nvidia-smi"), "-L"]
    listed = subprocess.run(listing, env=sim.env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert listed.stdout == read(FIXTURES / "h200-mig-disabled" / "nvidia-smi_-L.txt")
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        unit_path = str(root / "usr" / "lib" / "systemd" / "system" / "gpu-sim-boot.service")
        verified = subprocess.run([analyze, "verify", f"--root={root}", unit_path], capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    refused = subprocess.run(["sh", str(SIM / "install.sh"), "/"], capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert refused.returncode == 2
    assert "refusing" in refused.stderr
