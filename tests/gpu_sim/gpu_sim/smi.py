# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``nvidia-smi`` stand-in: the subset our roles and parsers use, printing what the real tool prints.

Fixture paths in comments are relative to ``tests/data/shared/fixtures/nvidia-smi/``. Diagnostics that the
real tool would not print go to stderr, prefixed ``gpu-sim:``.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable

from . import state as st
from .state import Gpu, SimError, State, StateMissing
from .tables import LAYOUTS, GiProfile, Layout

# The well-known message of nvidia-smi without a loaded driver (exit code 9, NVML_ERROR_DRIVER_NOT_LOADED).
DRIVER_NOT_LOADED = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)
USAGE = "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."
NO_DEVICES = "No devices were found"
NO_MIG_ENABLED = "No MIG-enabled devices found."  # h200-mig-disabled/nvidia-smi_mig_-lgi.txt (rc 0)
NO_GI = "No GPU instances found: Not Found"  # documented/a30/user-session-535.183.01/01_nvidia-smi_mig_-lgi_no-instances.txt
NO_CI = "No compute instances found: Not Found"
PERSISTENCE_WARNING = (  # documented/h100-pcie-80gb/user-notes-570.169/nvidia-smi_-i_0_-mig_1_persistence-warning.txt
    "Warning: persistence mode is disabled on device {bus}. See the Known Issues section of the nvidia-smi(1) man page "
    "for more information. Run with [--help | -h] switch to get more information on how to enable persistence mode."
)
IN_USE_HINT = (  # documented/a100-sxm4-80gb/dgx-station-kr-notes/nvidia-smi_-i_0_-mig_1_pending-in-use.txt
    "{bus} is currently being used by one or more other processes (e.g. CUDA application or a monitoring application "
    "such as another instance of nvidia-smi). Please first kill all processes using the device and retry the command "
    "or reboot the system to make MIG mode effective."
)
RESET_IN_USE = (  # nvidia-smi's text for a reset refused while processes hold the GPU (not among the fixtures)
    "{count} device is currently being used by one or more other processes (e.g., Fabric Manager, CUDA application, "
    "graphics application such as an X server, or a monitoring application such as another instance of nvidia-smi). "
    "Please first kill all processes using this device and all compute applications running in the system."
)


class Usage(Exception):
    """Arguments the simulator does not accept (the real tool prints USAGE, rc 2)."""


class Output:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.notes: list[str] = []

    def __call__(self, line: str = "") -> None:
        self.lines.append(line)

    def note(self, line: str) -> None:
        self.notes.append(f"gpu-sim: {line}")


# -- arguments ----------------------------------------------------------------------------------------------------

_TOP_VALUES = {
    "-i": "id",
    "--id": "id",
    "-mig": "mig",
    "--multi-instance-gpu": "mig",
    "--query-gpu": "query",
    "--query-compute-apps": "apps",
    "--format": "format",
}
_TOP_FLAGS = {"-L": "list", "--list-gpus": "list", "-r": "reset", "--gpu-reset": "reset"}
_MIG_VALUES = {
    "-i": "id",
    "--id": "id",
    "-cgi": "cgi",
    "--create-gpu-instance": "cgi",
    "-gi": "gi",
    "--gpu-instance-id": "gi",
    "-ci": "ci",
    "--compute-instance-id": "ci",
}
_MIG_FLAGS = {
    "-C": "default_ci",
    "--default-compute-instance": "default_ci",
    "-lgi": "lgi",
    "--list-gpu-instances": "lgi",
    "-lgip": "lgip",
    "--list-gpu-instance-profiles": "lgip",
    "-lgipp": "lgipp",
    "--list-gpu-instance-possible-placements": "lgipp",
    "-lci": "lci",
    "--list-compute-instances": "lci",
    "-dgi": "dgi",
    "--destroy-gpu-instance": "dgi",
    "-dci": "dci",
    "--destroy-compute-instance": "dci",
}


def parse_options(argv: list[str], values: dict[str, str], flags: dict[str, str]) -> dict[str, str]:
    """``-x v``, ``--xx=v`` and flags into {name: value}; anything else is a Usage error."""
    result: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, inline = arg.partition("=")
        if name in values:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise Usage(f"{arg} needs a value")
            key = values[name]
        elif arg in flags:
            key, value = flags[arg], ""
        else:
            raise Usage(f"option {arg!r} is not simulated")
        if key in result:
            raise Usage(f"{arg} given twice")
        result[key] = value
        i += 1
    return result


def _normal_bus(text: str) -> str:
    parts = text.upper().split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    return f"{int(parts[0], 16):08X}:{parts[1]}:{parts[2]}" if len(parts) == 3 else text


def select(state: State, ids: str | None) -> list[Gpu]:
    """GPUs named by -i: indices, UUIDs or PCI bus ids, comma-separated; all GPUs without -i."""
    if ids is None:
        return list(state.gpus)
    chosen: list[Gpu] = []
    for given in ids.split(","):
        item = given.strip()
        for gpu in state.gpus:
            if item == str(gpu.index) or item == gpu.uuid or (":" in item and _normal_bus(item) == gpu.bus_id):
                if gpu not in chosen:
                    chosen.append(gpu)
                break
        else:
            raise LookupError(item)
    return chosen


# -- tables ---------------------------------------------------------------------------------------------------


def compose(width: int, fields: list[tuple[int, str, str]]) -> str:
    """A '|...|' row of ``width`` with each (anchor, text, 'l'|'r') placed at its column; overlaps are a bug."""
    row = ["|"] + [" "] * (width - 2) + ["|"]
    for anchor, text, align in fields:
        start = anchor if align == "l" else anchor - len(text)
        end = start + len(text)
        if start < 1 or end > width - 1 or any(c != " " for c in row[start:end]):
            raise ValueError(f"{text!r} does not fit at column {anchor} of a {width}-column table")
        row[start:end] = list(text)
    return "".join(row)


def render_lgip(layout: Layout, gpus: list[Gpu]) -> list[str]:
    """``nvidia-smi mig -lgip``: as h200-mig-disabled/nvidia-smi_mig_-lgip.txt (580) or the 535 layout."""
    head = layout.lgip_head
    width, border = len(head[0]), head[0]
    lines = list(head)
    d = layout.lgip_shift
    for gpu in gpus:
        for p in gpu.spec.profiles:
            free = st.free_instances(gpu.spec, gpu.gpu_instances, p)
            lines.append(
                compose(
                    width,
                    [
                        (5, str(gpu.index), "r"),
                        (7, f"MIG {p.name}", "l"),
                        (27 + d, str(p.id), "r"),
                        (33 + d, str(free), "r"),
                        (33 + d, f"/{p.instances}", "l"),
                        (43 + d, p.memory_gib, "l"),
                        (54 + d, "Yes" if p.p2p else "No", "l"),
                        (61 + d, str(p.sm), "l"),
                        (68 + d, str(p.dec), "l"),
                        (74 + d, str(p.enc), "l"),
                    ],
                )
            )
            lines.append(compose(width, [(63 + d, str(p.ce), "r"), (68 + d, str(p.jpeg), "l"), (74 + d, str(p.ofa), "l")]))
            lines.append(border)
    return lines


def render_lgipp(gpus: list[Gpu]) -> list[str]:
    """``nvidia-smi mig -lgipp``: as h200-mig-disabled/nvidia-smi_mig_-lgipp.txt ('Placement :' for a single one)."""
    lines = []
    for gpu in gpus:
        for p in gpu.spec.profiles:
            label = "Placements:" if len(p.starts) > 1 else "Placement :"
            starts = ",".join(str(s) for s in p.starts)
            lines.append(f"GPU {gpu.index:2d} Profile ID {p.id:2d} {label} {{{starts}}}:{p.size}")
    return lines


def render_lgi(layout: Layout, gpus: list[Gpu]) -> list[str]:
    head = layout.lgi_head
    width, border = len(head[0]), head[0]
    lines = list(head)
    for gpu in gpus:
        for gi in st.listed_instances(gpu):
            profile = st.gi_profile(gpu, gi)
            fields = [
                (5, str(gpu.index), "r"),
                (7, f"MIG {profile.name}", "l"),
                (layout.lgi_pid_r, str(profile.id), "r"),
                (layout.lgi_id_r, str(gi.id), "r"),
                (layout.lgi_place_l, f"{gi.start}:{gi.size}", "l"),
            ]
            lines += [compose(width, fields), border]
    return lines


def render_lci(layout: Layout, gpus: list[Gpu]) -> list[str]:
    head = layout.lci_head
    width, border = len(head[0]), head[0]
    lines = list(head)
    for gpu in gpus:
        for gi in st.listed_instances(gpu):
            for ci in sorted(gi.compute_instances, key=lambda c: c.id):
                fields = [
                    (5, str(gpu.index), "r"),
                    (12, str(gi.id), "r"),
                    (19, f"MIG {st.ci_name(gpu, gi, ci)}", "l"),
                    (41, str(ci.profile_id), "r"),
                    (51, str(ci.id), "r"),
                ]
                if layout.lci_place_l is not None:
                    fields.append((layout.lci_place_l, f"{ci.start}:{ci.size}", "l"))
                lines += [compose(width, fields), border]
    return lines


def render_list(gpus: list[Gpu]) -> list[str]:
    """``nvidia-smi -L``: h200-mig-disabled/nvidia-smi_-L.txt; MIG lines as documented/a30/user-session-535.183.01/
    13_nvidia-smi_-L.txt and documented/h100-80gb-hbm3/mig-user-guide/nvidia-smi_-L_CIs_R570.txt (by GI ID, then CI ID)."""
    lines = []
    for gpu in gpus:
        lines.append(f"GPU {gpu.index}: {gpu.spec.name} (UUID: {gpu.uuid})")
        if not gpu.mig_current:
            continue
        devices = [(gi, ci) for gi in sorted(gpu.gpu_instances, key=lambda g: g.id) for ci in sorted(gi.compute_instances, key=lambda c: c.id)]
        for n, (gi, ci) in enumerate(devices):
            lines.append(f"  MIG {st.ci_name(gpu, gi, ci):<11s} Device {n:2d}: (UUID: {ci.uuid})")
    return lines


# -- --query-gpu ----------------------------------------------------------------------------------------------

# CUDA compute capability (NVIDIA's "CUDA GPUs" list: A100 8.0, H100/H200 9.0); no capture here shows the field.
# mig-parted's .deb postinst reads it to pick hooks-minimal.yaml (>= 9.0) or hooks-default.yaml.
_COMPUTE_CAP = {"A100-SXM4-40GB": "8.0", "H200": "9.0"}

# name -> (unit for the header and the value, value). h200-mig-disabled/nvidia-smi_--query-gpu.csv shows the
# header with ' [MiB]' and values '143771 MiB'; ',nounits' drops the unit from the values.
_QUERY: dict[str, tuple[str, Callable[[State, Gpu], str]]] = {
    "index": ("", lambda s, g: str(g.index)),
    "count": ("", lambda s, g: str(len(s.gpus))),
    "name": ("", lambda s, g: g.spec.name),
    "uuid": ("", lambda s, g: g.uuid),
    "pci.bus_id": ("", lambda s, g: g.bus_id),
    "pci.device_id": ("", lambda s, g: g.spec.device_id),
    "pci.sub_device_id": ("", lambda s, g: g.spec.sub_device_id),
    "driver_version": ("", lambda s, g: s.driver),
    "mig.mode.current": ("", lambda s, g: st.mode_word(g.mig_current)),
    "mig.mode.pending": ("", lambda s, g: st.mode_word(g.mig_pending)),
    "memory.total": ("MiB", lambda s, g: str(g.spec.memory_total_mib)),
    "persistence_mode": ("", lambda s, g: st.mode_word(g.persistence)),
    "compute_cap": ("", lambda s, g: _COMPUTE_CAP[g.model]),
}


def _format_options(format_arg: str) -> list[str]:
    options = [f.strip() for f in format_arg.split(",")]
    if not options or options[0] != "csv" or any(o not in ("noheader", "nounits") for o in options[1:]):
        raise Usage(f"--format={format_arg} is not simulated (csv[,noheader][,nounits])")
    return options


def query(state: State, gpus: list[Gpu], fields_arg: str, format_arg: str, out: Output) -> int:
    fields = [f.strip() for f in fields_arg.split(",")]
    for name in fields:
        if name not in _QUERY:
            out(f'Field "{name}" is not a valid field to query.')
            out()
            return 2
    options = _format_options(format_arg)
    if "noheader" not in options:
        out(", ".join(name + (f" [{_QUERY[name][0]}]" if _QUERY[name][0] else "") for name in fields))
    for gpu in gpus:
        values = []
        for name in fields:
            unit, get = _QUERY[name]
            value = get(state, gpu)
            values.append(f"{value} {unit}" if unit and "nounits" not in options else value)
        out(", ".join(values))
    return 0


# -- --query-compute-apps -------------------------------------------------------------------------------------

# name -> (header, unit, value). Public transcripts of real nvidia-smi (see README): the header is
# "pid, process_name, used_gpu_memory [MiB]" for --query-compute-apps=pid,process_name,used_memory, values like
# "6010 MiB" ("6010" with nounits), a header line alone when no process runs. used_gpu_memory is the field's other name.
_APPS: dict[str, tuple[str, str, Callable[[Gpu, st.Process], str]]] = {
    "pid": ("pid", "", lambda g, p: str(p.pid)),
    "process_name": ("process_name", "", lambda g, p: p.name),
    "gpu_uuid": ("gpu_uuid", "", lambda g, p: g.uuid),
    "gpu_bus_id": ("gpu_bus_id", "", lambda g, p: g.bus_id),
    "used_memory": ("used_gpu_memory", "MiB", lambda g, p: str(p.used_mib)),
    "used_gpu_memory": ("used_gpu_memory", "MiB", lambda g, p: str(p.used_mib)),
}


def query_apps(gpus: list[Gpu], fields_arg: str, format_arg: str, out: Output) -> int:
    """One row per process holding a GPU (gpu-sim set-busy), GPUs in index order."""
    fields = [f.strip() for f in fields_arg.split(",")]
    for name in fields:
        if name not in _APPS:
            out(f'Field "{name}" is not a valid field to query.')
            out()
            return 2
    options = _format_options(format_arg)
    if "noheader" not in options:
        out(", ".join(_APPS[name][0] + (f" [{_APPS[name][1]}]" if _APPS[name][1] else "") for name in fields))
    for gpu in gpus:
        for process in gpu.busy:
            values = []
            for name in fields:
                _header, unit, get = _APPS[name]
                value = get(gpu, process)
                values.append(f"{value} {unit}" if unit and "nounits" not in options else value)
            out(", ".join(values))
    return 0


# -- actions --------------------------------------------------------------------------------------------------


def set_mode(state: State, gpus: list[Gpu], value: str, out: Output) -> int:
    if value not in ("0", "1"):
        raise Usage(f"-mig {value}: expected 0 or 1")
    enabled = value == "1"
    word = "enable" if enabled else "disable"
    for gpu in gpus:
        blocked = st.set_mig_mode(state, gpu, enabled)
        if blocked is None:  # documented/a100-sxm4-40gb/mig-user-guide/nvidia-smi_-i_0_-mig_1.txt, .../nvidia-smi_-mig_0.txt
            out(f"{'Enabled' if enabled else 'Disabled'} MIG Mode for GPU {gpu.bus_id}")
            if not gpu.persistence:
                out()
                out(PERSISTENCE_WARNING.format(bus=gpu.bus_id))
        else:
            out(f"Warning: MIG mode is in pending {word} state for GPU {gpu.bus_id}:{blocked}")
            if blocked == st.NOT_SUPPORTED:  # ...mig-user-guide/nvidia-smi_-i_0_-mig_1_passthrough-pending.txt
                out(f"Reboot the system or try nvidia-smi --gpu-reset to make MIG mode effective on GPU {gpu.bus_id}")
            else:
                out(IN_USE_HINT.format(bus=gpu.bus_id))
                out.note(f"GPU {gpu.index} is held by {gpu.holders()}")
    out("All done.")
    return 0


def reset_gpus(state: State, gpus: list[Gpu], out: Output) -> int:
    """``nvidia-smi --gpu-reset``; the refusal of a GPU that cannot be reset is
    documented/a100-sxm4-40gb/mig-user-guide/nvidia-smi_--gpu-reset_passthrough.txt."""
    in_use: list[Gpu] = []
    rc = 0
    for gpu in gpus:
        failure = st.reset(state, gpu)
        if failure is None:
            out(f"GPU {gpu.bus_id} was successfully reset.")
        elif failure == st.NOT_SUPPORTED:
            out(f"Resetting GPU {gpu.bus_id} is not supported.")
            rc = rc or st.NVML_RC[failure]
        else:
            in_use.append(gpu)
            rc = rc or st.NVML_RC[failure]
    if in_use:
        out("The following GPUs could not be reset:")
        for gpu in in_use:
            out(f"  GPU {gpu.bus_id}: {st.IN_USE}")
            out.note(f"GPU {gpu.index} is held by {gpu.holders()}")
        out()
        out(RESET_IN_USE.format(count=len(in_use)))
    if rc == 0:
        out("All done.")
    return rc


def _profile_for(gpu: Gpu, token: str) -> GiProfile | None:
    token = token.strip()
    if token.isdigit():
        return gpu.spec.profile(int(token))
    return gpu.spec.profile_by_name(token.removeprefix("MIG ").strip())


def create_gpu_instances(state: State, gpus: list[Gpu], profiles: str, with_ci: bool, out: Output) -> int:
    """``mig -cgi <ids or names> [-C]``: documented/a100-sxm4-40gb/mig-user-guide/nvidia-smi_mig_-cgi_*.txt."""
    for gpu in gpus:
        for token in profiles.split(","):
            profile = _profile_for(gpu, token)
            try:
                if profile is None:
                    raise SimError(st.NOT_FOUND)
                gi = st.create_gpu_instance(state, gpu, profile)
            except SimError as error:
                out(f"Unable to create a GPU instance on GPU {gpu.index:2d} using profile {token.strip()}: {error.reason}")
                out(f"Failed to create GPU instances: {error.reason}")
                return st.NVML_RC[error.reason]
            out(f"Successfully created GPU instance ID {gi.id:2d} on GPU {gpu.index:2d} using profile MIG {profile.name} (ID {profile.id:2d})")
            if with_ci:
                ci = st.create_full_compute_instance(state, gpu, gi)
                out(
                    f"Successfully created compute instance ID {ci.id:2d} on GPU {gpu.index:2d} GPU instance ID {gi.id:2d} "
                    f"using profile MIG {st.ci_name(gpu, gi, ci)} (ID {ci.profile_id:2d})"
                )
    return 0


def _id_filter(text: str | None) -> set[int] | None:
    if text is None:
        return None
    try:
        return {int(x) for x in text.split(",")}
    except ValueError as error:
        raise Usage(f"expected instance IDs, got {text!r}") from error


def destroy_compute_instances(state: State, gpus: list[Gpu], gi_ids: set[int] | None, ci_ids: set[int] | None, out: Output) -> int:
    """``mig -dci``: documented/a100-sxm4-40gb/mig-user-guide/nvidia-smi_mig_-dci_-ci_0,1,2_-gi_1.txt."""
    targets = [
        (gpu, gi, ci)
        for gpu in gpus
        for gi in st.listed_instances(gpu)
        if gi_ids is None or gi.id in gi_ids
        for ci in sorted(gi.compute_instances, key=lambda c: c.id)
        if ci_ids is None or ci.id in ci_ids
    ]
    if not targets:
        out(NO_CI)
        return st.NVML_RC[st.NOT_FOUND]
    for gpu, gi, ci in targets:
        try:
            st.destroy_compute_instance(state, gpu, gi, ci)
        except SimError as error:
            out(f"Unable to destroy compute instance ID {ci.id:2d} from GPU {gpu.index:2d} GPU instance ID {gi.id:2d}: {error.reason}")
            out(f"Failed to destroy compute instances: {error.reason}")
            out.note(f"GPU {gpu.index} is held by {gpu.holders()}")
            return st.NVML_RC[error.reason]
        out(f"Successfully destroyed compute instance ID {ci.id:2d} from GPU {gpu.index:2d} GPU instance ID {gi.id:2d}")
    return 0


def destroy_gpu_instances(state: State, gpus: list[Gpu], gi_ids: set[int] | None, out: Output) -> int:
    """``mig -dgi``: documented/a100-sxm4-40gb/mig-user-guide/nvidia-smi_mig_-dgi.txt."""
    targets = [(gpu, gi) for gpu in gpus for gi in st.listed_instances(gpu) if gi_ids is None or gi.id in gi_ids]
    if not targets:
        out(NO_GI)
        return st.NVML_RC[st.NOT_FOUND]
    for gpu, gi in targets:
        try:
            st.destroy_gpu_instance(state, gpu, gi)
        except SimError as error:
            out(f"Unable to destroy GPU instance ID {gi.id:2d} from GPU {gpu.index:2d}: {error.reason}")
            out(f"Failed to destroy GPU instances: {error.reason}")
            if gpu.busy:
                out.note(f"GPU {gpu.index} is held by {gpu.holders()}")
            return st.NVML_RC[error.reason]
        out(f"Successfully destroyed GPU instance ID {gi.id:2d} from GPU {gpu.index:2d}")
    return 0


def run_mig(state: State, opts: dict[str, str], out: Output) -> int:
    actions = [a for a in ("lgip", "lgipp", "lgi", "lci", "cgi", "dgi", "dci") if a in opts]
    if len(actions) != 1:
        raise Usage("exactly one of -lgip, -lgipp, -lgi, -lci, -cgi, -dgi, -dci is simulated")
    action = actions[0]
    allowed = {"lgip": {"id"}, "lgipp": {"id"}, "lgi": {"id"}, "lci": {"id"}, "cgi": {"id", "default_ci"}, "dgi": {"id", "gi"}, "dci": {"id", "gi", "ci"}}
    extra = set(opts) - {action} - allowed[action]
    if extra:
        raise Usage(f"{', '.join(sorted(extra))} with -{action} is not simulated")
    gpus = select(state, opts.get("id"))
    layout = LAYOUTS[state.driver]
    if action in ("lgip", "lgipp"):
        for line in render_lgip(layout, gpus) if action == "lgip" else render_lgipp(gpus):
            out(line)
        return 0
    enabled = [g for g in gpus if g.mig_current]
    if not enabled:
        out(NO_MIG_ENABLED)
        return 0 if action in ("lgi", "lci") else st.NVML_RC[st.NOT_FOUND]
    if action == "lgi":
        if not any(g.gpu_instances for g in enabled):
            out(NO_GI)
            return st.NVML_RC[st.NOT_FOUND]
        for line in render_lgi(layout, enabled):
            out(line)
        return 0
    if action == "lci":
        if not any(g.gpu_instances for g in enabled):
            out(NO_GI)
            return st.NVML_RC[st.NOT_FOUND]
        if not any(gi.compute_instances for g in enabled for gi in g.gpu_instances):
            out(NO_CI)
            return st.NVML_RC[st.NOT_FOUND]
        for line in render_lci(layout, enabled):
            out(line)
        return 0
    if action == "cgi":
        return create_gpu_instances(state, enabled, opts["cgi"], "default_ci" in opts, out)
    if action == "dgi":
        return destroy_gpu_instances(state, enabled, _id_filter(opts.get("gi")), out)
    return destroy_compute_instances(state, enabled, _id_filter(opts.get("gi")), _id_filter(opts.get("ci")), out)


def run(argv: list[str]) -> tuple[int, Output]:
    """Run one nvidia-smi command line against the state; returns (rc, output)."""
    out = Output()
    try:
        if argv and argv[0] == "mig":
            opts = parse_options(argv[1:], _MIG_VALUES, _MIG_FLAGS)
            writes = bool({"cgi", "dgi", "dci"} & set(opts))
        else:
            opts = parse_options(argv, _TOP_VALUES, _TOP_FLAGS)
            writes = bool({"mig", "reset"} & set(opts))
        with st.session(write=writes) as state:
            try:
                if argv and argv[0] == "mig":
                    return run_mig(state, opts, out), out
                actions = [a for a in ("list", "query", "apps", "mig", "reset") if a in opts]
                if len(actions) != 1 or set(opts) - {actions[0], "id"} - ({"format"} if actions[0] in ("query", "apps") else set()):
                    raise Usage("one of -L, --query-gpu or --query-compute-apps (with --format), -mig, --gpu-reset, with an optional -i, is simulated")
                gpus = select(state, opts.get("id"))
                if actions[0] == "list":
                    for line in render_list(gpus):
                        out(line)
                    return 0, out
                if actions[0] == "query":
                    if "format" not in opts:
                        raise Usage("--query-gpu needs --format=csv")
                    return query(state, gpus, opts["query"], opts["format"], out), out
                if actions[0] == "apps":
                    if "format" not in opts:
                        raise Usage("--query-compute-apps needs --format=csv")
                    return query_apps(gpus, opts["apps"], opts["format"], out), out
                if actions[0] == "mig":
                    return set_mode(state, gpus, opts["mig"], out), out
                return reset_gpus(state, gpus, out), out
            except LookupError as error:
                out(NO_DEVICES)
                out.note(f"-i {error.args[0]}: no such GPU")
                return st.NVML_RC[st.NOT_FOUND], out
    except Usage as error:
        out.lines = [USAGE]
        out.note(str(error))
        return 2, out
    except StateMissing as error:
        out(DRIVER_NOT_LOADED)
        out.note(f"no state file {error.args[0]} (run gpu-sim init)")
        return 9, out


def hang_if_set(argv: list[str]) -> None:
    """gpu-sim set-hang: a call whose arguments contain the switch's text sleeps first, as nvidia-smi on a hung driver
    does (logged as op ``hang``). The state lock is not held while sleeping: other commands carry on."""
    shown = " ".join(argv)
    try:
        with st.session() as state:
            hang = state.hang
        if hang is None or hang["match"] not in shown:
            return
        with st.session(write=True) as state:
            state.record("hang", None, f"nvidia-smi {shown}: sleeping {hang['seconds']} s")
    except (StateMissing, ValueError):
        return
    print(f"gpu-sim: nvidia-smi {shown}: hanging for {hang['seconds']} s (gpu-sim set-hang)", file=sys.stderr, flush=True)
    time.sleep(hang["seconds"])


def main(argv: list[str]) -> int:
    hang_if_set(argv)
    rc, out = run(argv)
    if out.lines:
        sys.stdout.write("\n".join(out.lines) + "\n")
    for note in out.notes:
        print(note, file=sys.stderr)
    return rc
