# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``gpu-sim``: set up and inspect the simulated GPUs (init, show, set-busy, clear-busy, set-resettable,
set-persistence, set-apply-failure, set-hang, reset-available, boot, log). The state file is ``$GPU_SIM_STATE`` (default
/var/lib/gpu-sim/state.json)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from . import boot
from . import state as st
from .tables import DEFAULT_DRIVER, LAYOUTS, MODELS

DEFAULT_APPLY_FAILURE = "error setting MIGConfig: injected failure (gpu-sim set-apply-failure)"
# A hung nvidia-smi sleeps this long by default: longer than any bound a test sets, never forever (no process is left
# behind for good when a test does not kill it).
DEFAULT_HANG_SECONDS = 600


def _gpus(state: st.State, which: str) -> list[st.Gpu]:
    if which == "all":
        return list(state.gpus)
    try:
        index = int(which)
    except ValueError:
        raise SystemExit(f"gpu-sim: GPU must be an index or 'all', got {which!r}") from None
    if not 0 <= index < len(state.gpus):
        raise SystemExit(f"gpu-sim: no GPU {index} (there are {len(state.gpus)})")
    return [state.gpus[index]]


def _on_off(text: str) -> bool:
    if text.lower() in ("1", "on", "true", "yes"):
        return True
    if text.lower() in ("0", "off", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpu-sim", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the GPUs (replaces any state)")
    init.add_argument("--model", required=True, choices=sorted(MODELS))
    init.add_argument("--count", type=int, default=8)
    init.add_argument("--driver", default=DEFAULT_DRIVER, choices=sorted(LAYOUTS), help="selects the table layouts")
    sub.add_parser("show", help="print the state as JSON")
    busy = sub.add_parser("set-busy", help="a process starts holding the GPU")
    busy.add_argument("gpu")
    busy.add_argument("--pid", type=int, required=True)
    busy.add_argument("--name", required=True)
    busy.add_argument("--used-mib", type=int, default=0, help="GPU memory it uses (nvidia-smi --query-compute-apps used_memory)")
    clear = sub.add_parser("clear-busy", help="processes holding the GPU exit")
    clear.add_argument("gpu")
    clear.add_argument("--pid", type=int, help="only this process (default: all)")
    resettable = sub.add_parser("set-resettable", help="whether the GPU can be reset without a reboot")
    resettable.add_argument("gpu")
    resettable.add_argument("value", type=_on_off)
    persistence = sub.add_parser("set-persistence", help="persistence mode (off: nvidia-smi -mig warns)")
    persistence.add_argument("gpu")
    persistence.add_argument("value", type=_on_off)
    failure = sub.add_parser("set-apply-failure", help="on: every nvidia-mig-parted apply fails after its apply-start hook, changing nothing")
    failure.add_argument("value", type=_on_off)
    failure.add_argument("--message", default=DEFAULT_APPLY_FAILURE, help="the error text (default: %(default)s)")
    hang = sub.add_parser("set-hang", help="on: every nvidia-smi whose arguments contain --match sleeps --seconds first (a hung driver)")
    hang.add_argument("value", type=_on_off)
    hang.add_argument("--match", default="", help="only nvidia-smi calls whose arguments, joined by spaces, contain this (default: every call)")
    hang.add_argument("--seconds", type=int, default=DEFAULT_HANG_SECONDS, help="how long each such call sleeps (default: %(default)s)")
    sub.add_parser("reset-available", help="exit 0 when every GPU can be reset without a reboot, 1 otherwise (changes nothing)")
    sub.add_parser("boot", help="what a reboot does to the GPUs")
    sub.add_parser("log", help="the operations log, one JSON object a line")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    command: str = args.command
    if command == "boot":
        return boot.main([])
    if command == "init":
        try:
            state = st.create(args.model, args.count, args.driver)
        except ValueError as error:
            raise SystemExit(f"gpu-sim: {error}") from None
        print(f"gpu-sim: {len(state.gpus)} x {args.model}, driver {args.driver}, state {st.state_path()}")
        return 0
    try:
        with st.session(write=command not in ("show", "log", "reset-available")) as state:
            if command == "show":
                sys.stdout.write(state.to_json())
            elif command == "log":
                for entry in state.log:
                    print(json.dumps(dataclasses.asdict(entry), sort_keys=True))
            elif command == "set-busy":
                for gpu in _gpus(state, args.gpu):
                    gpu.busy = [p for p in gpu.busy if p.pid != args.pid] + [st.Process(args.pid, args.name, args.used_mib)]
                    state.record("set-busy", gpu.index, f"pid {args.pid} ({args.name})")
            elif command == "clear-busy":
                for gpu in _gpus(state, args.gpu):
                    gone = [p for p in gpu.busy if args.pid is None or p.pid == args.pid]
                    if gone:
                        gpu.busy = [p for p in gpu.busy if p not in gone]
                        state.record("clear-busy", gpu.index, ", ".join(f"pid {p.pid} ({p.name})" for p in gone))
            elif command == "set-resettable":
                for gpu in _gpus(state, args.gpu):
                    if gpu.resettable != args.value:
                        gpu.resettable = args.value
                        state.record("set-resettable", gpu.index, str(args.value).lower())
            elif command == "set-apply-failure":
                wanted = str(args.message) if args.value else None
                if state.apply_failure != wanted:
                    state.apply_failure = wanted
                    state.record("set-apply-failure", None, f"on: {wanted}" if wanted else "off")
            elif command == "set-hang":
                if args.value and args.seconds <= 0:
                    raise SystemExit(f"gpu-sim: --seconds must be > 0, got {args.seconds}")
                wanted_hang = {"match": str(args.match), "seconds": int(args.seconds)} if args.value else None
                if state.hang != wanted_hang:
                    state.hang = wanted_hang
                    detail = f"on: nvidia-smi calls matching {args.match!r} sleep {args.seconds} s" if wanted_hang else "off"
                    state.record("set-hang", None, detail)
            elif command == "reset-available":
                fixed = [gpu for gpu in state.gpus if not gpu.resettable]
                for gpu in fixed:
                    print(f"gpu-sim: GPU {gpu.index} ({gpu.bus_id}) cannot be reset without a reboot")
                return 1 if fixed else 0
            elif command == "set-persistence":
                for gpu in _gpus(state, args.gpu):
                    if gpu.persistence != args.value:
                        gpu.persistence = args.value
                        state.record("set-persistence", gpu.index, str(args.value).lower())
    except st.StateMissing as error:
        raise SystemExit(f"gpu-sim: no state file {error.args[0]} (run gpu-sim init)") from None
    return 0
