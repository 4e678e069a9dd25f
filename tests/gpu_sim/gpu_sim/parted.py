# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``nvidia-mig-parted`` stand-in: ``apply``, ``assert``, ``export`` and ``--version`` on the simulated GPUs.

It follows NVIDIA/mig-parted (cmd/nvidia-mig-parted/{apply,assert,export}, pkg/mig/config, api/spec/v1,
api/hooks/v1): the same order of checks, hooks and driver calls, the same stdout lines ("MIG configuration
applied successfully", "Selected MIG configuration currently applied") and logrus lines on stderr
(``time="..." level=fatal msg="..."``, exit 1). Lines starting ``gpu-sim:`` are the simulator's own diagnostics.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import miniyaml, smi
from . import state as st
from .state import Gpu, SimError, State

VERSION = "0.13.0"
_PROFILE_RE = re.compile(r"(?:(\d+)c\.)?(\d+)g\.(\d+)gb((?:\+[a-z]+(?:\.[a-z]+)*|-[a-z]+)*)")


class Fatal(Exception):
    """Ends the command like mig-parted's log.Fatal (the message is capitalised there)."""


class Log:
    def __init__(self, debug: bool) -> None:
        self.debug_enabled = debug
        self.seen: set[str] = set()

    def line(self, level: str, msg: str) -> None:
        now = datetime.datetime.now().astimezone()
        stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
        shown = msg if re.fullmatch(r"[A-Za-z0-9\-._/@^+]+", msg) else json.dumps(msg)
        print(f'time="{stamp}" level={level} msg={shown}', file=sys.stderr)

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self.line("debug", msg)

    def error(self, msg: str) -> None:
        self.line("error", msg)

    def note(self, msg: str) -> None:
        print(f"gpu-sim: {msg}", file=sys.stderr)


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


# -- the v1 config ----------------------------------------------------------------------------------------------


@dataclass
class MigConfigSpec:
    devices: str | list[int]
    mig_enabled: bool
    mig_devices: dict[str, int]
    device_filter: str | list[str] | None = None

    def filters(self) -> list[str]:
        if self.device_filter is None or self.device_filter == "":
            return []
        return [self.device_filter] if isinstance(self.device_filter, str) else list(self.device_filter)


def normalize_profile(name: str) -> str:
    """'1c.1g.5gb' -> '1g.5gb'; raises ValueError for what mig-parted rejects."""
    match = _PROFILE_RE.fullmatch(name)
    if match is None:
        raise ValueError(f"invalid format for '{name}': expected '[<c>c.]<g>g.<gb>gb[+attr...]'")
    c, g = match.group(1), match.group(2)
    return name[len(c) + 2 :] if c is not None and c == g else name


def _spec_entry(raw: Any) -> MigConfigSpec:
    """api/spec/v1 MigConfigSpec.UnmarshalJSON, with its error messages."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a mapping, got {raw!r}")
    for required in ("devices", "mig-enabled"):
        if required not in raw:
            raise ValueError(f"missing required field: {required}")
    for key in raw:
        if key not in ("device-filter", "devices", "mig-enabled", "mig-devices"):
            raise ValueError(f"unexpected field: {key}")
    devices = raw["devices"]
    if isinstance(devices, str):
        if devices != "all":
            raise ValueError(f"invalid string input for 'devices': {devices}")
    elif not (isinstance(devices, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in devices)):
        raise ValueError(f"'devices' must be 'all' or a list of GPU indices, got {devices!r}")
    device_filter = raw.get("device-filter")
    if not (device_filter is None or isinstance(device_filter, str)) and not (
        isinstance(device_filter, list) and all(isinstance(d, str) for d in device_filter)
    ):
        raise ValueError(f"'device-filter' must be a string or a list of strings, got {device_filter!r}")
    enabled = raw["mig-enabled"]
    if not isinstance(enabled, bool):
        raise ValueError(f"'mig-enabled' must be a boolean, got {enabled!r}")
    mig_devices: dict[str, int] = {}
    if "mig-devices" in raw and raw["mig-devices"] is not None:
        given = raw["mig-devices"]
        if not isinstance(given, dict):
            raise ValueError(f"'mig-devices' must be a mapping, got {given!r}")
        for key, count in given.items():
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ValueError(f"error validating values in 'mig-devices' field: invalid count for '{key}': {count!r}")
            try:
                name = normalize_profile(key)
            except ValueError as error:
                raise ValueError(f"error validating values in 'mig-devices' field: {error}") from None
            mig_devices[name] = mig_devices.get(name, 0) + count
    elif enabled:
        raise ValueError("missing required field 'mig-devices' when 'mig-enabled' is true")
    if not enabled and mig_devices:
        raise ValueError("MIG devices included when 'mig-enabled' is false")
    return MigConfigSpec(devices, enabled, mig_devices, device_filter)


def parse_spec(text: str) -> dict[str, list[MigConfigSpec]]:
    """api/spec/v1 Spec.UnmarshalJSON: version v1, mig-configs with at least one non-empty entry."""
    data = miniyaml.loads(text)
    if not isinstance(data, dict):
        raise ValueError("expected a mapping at the top level")
    if "version" not in data and data:
        raise ValueError("unable to parse with missing 'version' field")
    if data.get("version") != "v1":
        raise ValueError(f"unknown version: {data.get('version')}")
    configs: dict[str, list[MigConfigSpec]] = {}
    for key, value in data.items():
        if key == "version":
            continue
        if key != "mig-configs":
            raise ValueError(f"unexpected field: {key}")
        if not isinstance(value, dict) or not value:
            raise ValueError("at least one entry in 'mig-configs' is required")
        for name, entries in value.items():
            if not isinstance(entries, list) or not entries:
                raise ValueError(f"at least one entry in '{name}' is required")
            configs[name] = [_spec_entry(entry) for entry in entries]
    return configs


def _device_id(text: str) -> tuple[int, int | None] | None:
    """types.NewDeviceIDFromString: '0xDDDDVVVV[:0xSSSSVVVV]'; None where mig-parted would not match."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            return int(parts[0], 0), None
        if len(parts) == 2:
            return int(parts[0], 0), int(parts[1], 0)
    except ValueError:
        return None
    return None


def matches(mc: MigConfigSpec, gpu: Gpu) -> bool:
    """MatchesDeviceFilter and MatchesDevices (api/spec/v1/helpers.go, pkg/types/device.go)."""
    filters = mc.filters()
    if filters:
        own = (int(gpu.spec.device_id, 16), int(gpu.spec.sub_device_id, 16))
        ids = [_device_id(f) for f in filters]
        if not any(i is not None and i[0] == own[0] and (i[1] is None or i[1] == own[1]) for i in ids):
            return False
    return mc.devices == "all" or (isinstance(mc.devices, list) and gpu.index in mc.devices)


def walk(config: list[MigConfigSpec], state: State) -> list[tuple[MigConfigSpec, Gpu]]:
    return [(mc, gpu) for mc in config for gpu in state.gpus if matches(mc, gpu)]


def current_config(gpu: Gpu) -> dict[str, int]:
    """GetMigConfig: one entry per compute instance, named like '1g.5gb' or '1c.3g.20gb'."""
    counts: Counter[str] = Counter()
    for gi in gpu.gpu_instances:
        for ci in gi.compute_instances:
            counts[st.ci_name(gpu, gi, ci)] += 1
    return dict(counts)


def config_equals(current: dict[str, int], wanted: dict[str, int]) -> bool:
    """types.MigConfig.Equals, as mig-parted does it (an entry with count 0 makes it unequal)."""
    return len(current) == len(wanted) and all(wanted.get(k, 0) > 0 and wanted[k] == v for k, v in current.items())


def flatten(wanted: dict[str, int]) -> list[str]:
    """MigConfig.Flatten: each profile count times, sorted by <g> then <c> descending, then attributes."""

    def key(name: str) -> tuple[int, int, str]:
        match = _PROFILE_RE.fullmatch(name)
        assert match is not None
        g = int(match.group(2))
        c = int(match.group(1) or g)
        return -g, -c, match.group(4)

    return sorted((name for name, count in wanted.items() for _copy in range(count)), key=key)


def orderings(items: list[str]) -> list[list[str]]:
    """iteratePermutationsUntilSuccess's order of trying: Flatten's order first, swapping, no repeats."""
    result: list[list[str]] = []

    def iterate(mps: list[str], i: int) -> None:
        if i >= len(mps):
            result.append(list(mps))
            return
        for j in range(i, len(mps)):
            if all(mps[k] != mps[j] for k in range(i, j)):
                mps[i], mps[j] = mps[j], mps[i]
                iterate(mps, i + 1)
                mps[i], mps[j] = mps[j], mps[i]

    iterate(list(items), 0)
    return result


# -- what apply and assert do ---------------------------------------------------------------------------------


class ApplyError(Exception):
    pass


def assert_mode(config: list[MigConfigSpec], state: State) -> str | None:
    for mc, gpu in walk(config, state):
        if mc.mig_enabled != gpu.mig_current:
            return "current mode different than mode being asserted"
    return None


def assert_config(config: list[MigConfigSpec], state: State, log: Log) -> str | None:
    matched: dict[int, bool] = {}
    for mc, gpu in walk(config, state):
        if not mc.mig_enabled and not gpu.mig_current:
            matched[gpu.index] = True
            continue
        if not gpu.mig_current:
            return f"error getting MIGConfig: error asserting MIG enabled: MIG mode is disabled on GPU {gpu.index}"
        log.debug(f"    Asserting MIG config: {_go_map(mc.mig_devices)}")
        matched[gpu.index] = config_equals(current_config(gpu), mc.mig_devices)
    if sum(matched.values()) != len(state.gpus):
        return "not all GPUs match the specified config"
    return None


def _go_map(config: dict[str, int]) -> str:
    return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(config.items())) + "]"


def clear_config(state: State, gpu: Gpu) -> None:
    """ClearMigConfig: destroy every compute instance, then its GPU instance."""
    for gi in st.listed_instances(gpu):
        for ci in sorted(gi.compute_instances, key=lambda c: c.id):
            try:
                st.destroy_compute_instance(state, gpu, gi, ci)
            except SimError as error:
                raise ApplyError(
                    f"error walking gpu instances for '{gpu.index}': error walking compute instances for '{gi.profile_id}': "
                    f"error destroying Compute instance for profile '({ci.profile_id}, 0)': {error.reason}"
                ) from None
        st.destroy_gpu_instance(state, gpu, gi)


def apply_mode(config: list[MigConfigSpec], state: State, skip_reset: bool, log: Log) -> None:
    """cmd/nvidia-mig-parted/apply/mode.go: clear and set the mode of every selected GPU, then reset all if pending."""
    pending = False
    for mc, gpu in walk(config, state):
        log.debug(f"  GPU {gpu.index}: {gpu.spec.device_id}")
        if gpu.mig_current:
            log.debug("    Clearing existing MIG configuration")
            try:
                clear_config(state, gpu)
            except ApplyError as error:
                if gpu.busy:
                    log.note(f"GPU {gpu.index} ({gpu.bus_id}) is held by {gpu.holders()}")
                raise ApplyError(f"error clearing existing MIG configurations: {error}") from None
        log.debug(f"    Updating MIG mode: {st.mode_word(mc.mig_enabled)}")
        st.set_mig_mode(state, gpu, mc.mig_enabled)
        pending = pending or gpu.mig_pending != gpu.mig_current
        log.debug(f"    Mode change pending: {str(gpu.mig_pending != gpu.mig_current).lower()}")
    if skip_reset or not pending:
        return
    log.debug("At least one mode change pending")
    log.debug("Resetting all GPUs...")
    out = smi.Output()  # util.ResetAllGPUs: nvidia-smi -r -i <every GPU's bus id>
    rc = smi.reset_gpus(state, list(state.gpus), out)
    if rc != 0:
        log.error("\n" + "\n".join(out.lines) + "\n")
        for gpu in state.gpus:
            if gpu.busy:
                log.note(f"GPU {gpu.index} ({gpu.bus_id}) is held by {gpu.holders()}")
            if not gpu.resettable:
                log.note(f"GPU {gpu.index} ({gpu.bus_id}) cannot be reset; its MIG mode stays pending until a reboot (gpu-sim boot)")
        raise ApplyError(f"error resetting all GPUs: exit status {rc}")
    log.debug("\n" + "\n".join(out.lines) + "\n")


def _try_order(gpu: Gpu, order: list[str]) -> str | None:
    """Whether creating the profiles in this order succeeds on the (cleared) GPU; the error if not."""
    instances: list[st.GpuInstance] = []
    for name in order:
        match = _PROFILE_RE.fullmatch(name)
        assert match is not None
        if match.group(1) is not None:
            return f"error creating Compute instance for '{name}': {st.NOT_SUPPORTED} (gpu-sim: only full compute instances are simulated)"
        profile = gpu.spec.profile_by_name(name)
        if profile is None:
            return f"error getting GPU instance profile info for '{name}': {st.NOT_FOUND}"
        start = st.choose_placement(gpu.spec, instances, profile)
        if start is None:
            return f"error creating GPU instance for '{name}': {st.INSUFFICIENT}"
        instances.append(st.GpuInstance(-1, profile.id, start, profile.size))
    return None


def set_config(state: State, gpu: Gpu, wanted: dict[str, int], log: Log) -> None:
    """pkg/mig/config SetMigConfig: clear, then try the orderings of the profiles until one fits."""
    try:
        clear_config(state, gpu)
    except ApplyError as error:
        log.error(capitalize(f"error clearing MigConfig: {error}"))
        if gpu.busy:
            log.note(f"GPU {gpu.index} ({gpu.bus_id}) is held by {gpu.holders()}")
        log.error(f"Error clearing MIG config on GPU {gpu.index}, erroneous devices may persist")
        raise ApplyError("error attempting multiple config orderings: all orderings failed") from None
    reported: set[str] = set()
    for order in orderings(flatten(wanted)):
        failure = _try_order(gpu, order)
        if failure is None:
            for name in order:
                profile = gpu.spec.profile_by_name(name)
                assert profile is not None
                gi = st.create_gpu_instance(state, gpu, profile)
                st.create_full_compute_instance(state, gpu, gi)
            return
        if failure not in reported:  # the real tool logs every failed ordering; the simulator each distinct error once
            reported.add(failure)
            log.error(capitalize(failure))
    raise ApplyError("error attempting multiple config orderings: all orderings failed")


def apply_config(config: list[MigConfigSpec], state: State, log: Log) -> None:
    """cmd/nvidia-mig-parted/apply/config.go."""
    for mc, gpu in walk(config, state):
        log.debug(f"  GPU {gpu.index}: {gpu.spec.device_id}")
        if mc.mig_enabled and not gpu.mig_current:
            raise ApplyError("unable to apply MIG config with MIG mode disabled")
        if not mc.mig_enabled and gpu.mig_current:
            raise ApplyError("MIG mode is currently enabled, but the configuration specifies it should be disabled")
        if not mc.mig_enabled:
            log.debug("    Skipping MIG config -- MIG disabled")
            continue
        log.debug(f"    Updating MIG config: {_go_map(mc.mig_devices)}")
        if config_equals(current_config(gpu), mc.mig_devices):
            log.debug("    Skipping -- already set to desired value")
            continue
        try:
            set_config(state, gpu, mc.mig_devices, log)
        except ApplyError as error:
            raise ApplyError(f"error setting MIGConfig: {error}") from None


# -- hooks ------------------------------------------------------------------------------------------------------


@dataclass
class Hook:
    command: str
    args: list[str] = field(default_factory=list)
    envs: dict[str, str] = field(default_factory=dict)
    workdir: str = ""


def parse_hooks(text: str) -> dict[str, list[Hook]]:
    """api/hooks/v1 Spec: {version, hooks: {name: [{command, args, envs, workdir}]}}."""
    data = miniyaml.loads(text)
    if not isinstance(data, dict):
        raise ValueError("expected a mapping at the top level")
    hooks: dict[str, list[Hook]] = {}
    for name, entries in (data.get("hooks") or {}).items():
        if not isinstance(entries, list):
            raise ValueError(f"hook {name!r}: expected a list")
        parsed = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("command"), str):
                raise ValueError(f"hook {name!r}: each entry needs a 'command' string")
            args = entry.get("args") or []
            envs = entry.get("envs") or {}
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise ValueError(f"hook {name!r}: 'args' must be a list of strings")
            if not isinstance(envs, dict) or not all(isinstance(v, str) for v in envs.values()):
                raise ValueError(f"hook {name!r}: 'envs' must map names to strings")
            parsed.append(Hook(entry["command"], args, envs, entry.get("workdir") or ""))
        hooks[name] = parsed
    return hooks


def run_hooks(hooks: dict[str, list[Hook]], name: str, envs: dict[str, str], log: Log) -> None:
    """HooksMap.Run: each hook with only its envs plus the CLI's flag variables (no inherited environment);
    output shown with --debug. GPU_SIM_STATE is passed on too, so that hooks see the same simulated GPUs."""
    for hook in hooks.get(name, []):
        env = {**hook.envs, **envs}
        if "GPU_SIM_STATE" in os.environ:
            env.setdefault("GPU_SIM_STATE", os.environ["GPU_SIM_STATE"])
        sink = None if log.debug_enabled else subprocess.DEVNULL
        if hook.workdir and not os.path.isdir(hook.workdir):
            raise ApplyError(f"error running {name} hook: chdir {hook.workdir}: no such file or directory")
        try:
            done = subprocess.run([hook.command, *hook.args], env=env, cwd=hook.workdir or None, stdout=sink, stderr=sink, check=False, timeout=600)
        except (FileNotFoundError, PermissionError) as error:
            raise ApplyError(f"error running {name} hook: fork/exec {hook.command}: {(error.strerror or '').lower()}") from None
        if done.returncode != 0:
            raise ApplyError(f"error running {name} hook: exit status {done.returncode}")


# -- the command line -------------------------------------------------------------------------------------------


@dataclass
class Flags:
    config_file: str = ""
    selected_config: str = ""
    hooks_file: str = ""
    skip_reset: bool = False
    mode_only: bool = False
    valid_config: bool = False
    output_format: str = "yaml"
    config_label: str = "current"


_STRING_FLAGS = {
    "apply": {("-f", "--config-file"): "config_file", ("-c", "--selected-config"): "selected_config", ("-k", "--hooks-file"): "hooks_file"},
    "assert": {("-f", "--config-file"): "config_file", ("-c", "--selected-config"): "selected_config"},
    "export": {("-o", "--output-format"): "output_format", ("-l", "--config-label"): "config_label"},
}
_BOOL_FLAGS = {
    "apply": {("-s", "--skip-reset"): "skip_reset", ("-m", "--mode-only"): "mode_only"},
    "assert": {("-m", "--mode-only"): "mode_only", ("-a", "--valid-config"): "valid_config"},
    "export": {},
}
_ENV = {
    "config_file": "MIG_PARTED_CONFIG_FILE",
    "selected_config": "MIG_PARTED_SELECTED_CONFIG",
    "hooks_file": "MIG_PARTED_HOOKS_FILE",
    "skip_reset": "MIG_PARTED_SKIP_RESET",
    "mode_only": "MIG_PARTED_MODE_CHANGE_ONLY",
    "valid_config": "MIG_PARTED_VALID_CONFIG",
    "output_format": "MIG_PARTED_OUTPUT_FORMAT",
    "config_label": "MIG_PARTED_CONFIG_LABEL",
}


def parse_flags(command: str, argv: list[str]) -> Flags:
    flags = Flags()
    strings = {alias: name for aliases, name in _STRING_FLAGS[command].items() for alias in aliases}
    bools = {alias: name for aliases, name in _BOOL_FLAGS[command].items() for alias in aliases}
    for name in set(strings.values()) | set(bools.values()):
        if _ENV[name] in os.environ:
            value = os.environ[_ENV[name]]
            setattr(flags, name, value.lower() in ("1", "true", "t") if name in bools.values() else value)
    i = 0
    while i < len(argv):
        arg, eq, inline = argv[i].partition("=")
        if arg in strings:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise Fatal(f"flag needs an argument: {arg}")
            setattr(flags, strings[arg], value)
        elif arg in bools:
            setattr(flags, bools[arg], inline.lower() in ("1", "true", "t") if eq else True)
        else:
            raise Fatal(f"flag provided but not defined: {arg}")
        i += 1
    return flags


def _read_config(flags: Flags, log: Log) -> list[MigConfigSpec]:
    if not flags.config_file:
        raise Fatal("missing required flags 'config-file'")
    log.debug("Parsing config file...")
    try:
        if flags.config_file == "-":
            text = sys.stdin.read()
        else:
            with open(flags.config_file, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as error:
        raise Fatal(f"error parsing config file: read error: open {flags.config_file}: {(error.strerror or '').lower()}") from None
    try:
        configs = parse_spec(text)
    except ValueError as error:
        raise Fatal(f"error parsing config file: unmarshal error: {error}") from None
    log.debug("Selecting specific MIG config...")
    if len(configs) > 1 and not flags.selected_config:
        raise Fatal("error selecting MIG config: missing required flag 'selected-config' when more than one config available")
    if len(configs) == 1 and not flags.selected_config:
        flags.selected_config = next(iter(configs))
    if flags.selected_config not in configs:
        raise Fatal(f"error selecting MIG config: selected mig-config not present: {flags.selected_config}")
    return configs[flags.selected_config]


def cmd_apply(flags: Flags, log: Log) -> int:
    config = _read_config(flags, log)
    hooks: dict[str, list[Hook]] = {}
    if flags.hooks_file:
        log.debug("Parsing Hooks file...")
        try:
            with open(flags.hooks_file, encoding="utf-8") as handle:
                hooks = parse_hooks(handle.read())
        except OSError as error:
            raise Fatal(f"error parsing hooks file: read error: open {flags.hooks_file}: {(error.strerror or '').lower()}") from None
        except ValueError as error:
            raise Fatal(f"error parsing hooks file: unmarshal error: {error}") from None
    envs = {
        "MIG_PARTED_CONFIG_FILE": flags.config_file,
        "MIG_PARTED_SELECTED_CONFIG": flags.selected_config,
        "MIG_PARTED_HOOKS_FILE": flags.hooks_file,
        "MIG_PARTED_SKIP_RESET": str(flags.skip_reset).lower(),
        "MIG_PARTED_MODE_CHANGE_ONLY": str(flags.mode_only).lower(),
    }
    try:
        _apply_with_hooks(config, flags, hooks, envs, log)
    except ApplyError as error:
        raise Fatal(f"error applying MIG configuration with hooks: {error}") from None
    print("MIG configuration applied successfully")
    return 0


def _apply_with_hooks(config: list[MigConfigSpec], flags: Flags, hooks: dict[str, list[Hook]], envs: dict[str, str], log: Log) -> None:
    """ApplyMigConfigWithHooks (cmd/nvidia-mig-parted/apply/apply.go)."""
    log.debug("Running apply-start hook")
    run_hooks(hooks, "apply-start", envs, log)
    failed = True
    try:
        with st.session() as state:
            injected = state.apply_failure
        if injected is not None:  # gpu-sim set-apply-failure on: fail before touching any GPU
            with st.session(write=True) as state:
                state.record("apply-failure", None, injected)
            raise ApplyError(injected)
        log.debug("Checking current MIG mode...")
        with st.session() as state:
            mode_error = assert_mode(config, state)
        if mode_error is not None:
            log.debug("Running pre-apply-mode hook")
            run_hooks(hooks, "pre-apply-mode", envs, log)
            log.debug("Applying MIG mode change...")
            with st.session(write=True) as state:
                apply_mode(config, state, flags.skip_reset, log)
        if not flags.mode_only:
            log.debug("Checking current MIG device configuration...")
            with st.session() as state:
                config_error = assert_config(config, state, log)
            if config_error is not None:
                log.debug("Running pre-apply-config hook")
                run_hooks(hooks, "pre-apply-config", envs, log)
                log.debug("Applying MIG device configuration...")
                with st.session(write=True) as state:
                    apply_config(config, state, log)
        failed = False
    finally:
        log.debug("Running apply-exit hook")
        try:
            run_hooks(hooks, "apply-exit", envs, log)
        except ApplyError as error:
            if not failed:
                raise
            log.error(capitalize(str(error)))


def cmd_assert(flags: Flags, log: Log) -> int:
    config = _read_config(flags, log)
    if flags.valid_config:
        print("Selected MIG configuration is valid")
        return 0
    with st.session() as state:
        log.debug("Asserting MIG mode configuration...")
        problem = assert_mode(config, state)
        if problem is None and not flags.mode_only:
            log.debug("Asserting MIG device configuration...")
            problem = assert_config(config, state, log)
    if problem is not None:
        log.debug(capitalize(problem))
        log.note(problem)
        raise Fatal("Assertion failure: selected configuration not currently applied")
    print("Selected MIG mode settings from configuration currently applied" if flags.mode_only else "Selected MIG configuration currently applied")
    return 0


def export_specs(state: State) -> list[dict[str, Any]]:
    """ExportMigConfigs + mergeMigConfigSpecs (cmd/nvidia-mig-parted/export/config.go)."""
    specs: list[dict[str, Any]] = [
        {
            "device-filter": [gpu.spec.device_id],
            "devices": [gpu.index],
            "mig-enabled": gpu.mig_current,
            "mig-devices": current_config(gpu) if gpu.mig_current else {},
        }
        for gpu in state.gpus
    ]
    merged: list[dict[str, Any]] = []
    for s in specs:
        for m in merged:
            if s["mig-enabled"] == m["mig-enabled"] and config_equals(s["mig-devices"], m["mig-devices"]):
                m["devices"] = sorted(set(m["devices"]) | set(s["devices"]))
                m["device-filter"] = sorted(set(m["device-filter"]) | set(s["device-filter"]))
                break
        else:
            merged.append(dict(s))
    df_devices: dict[str, list[int]] = {}
    for s in specs:
        df = s["device-filter"][0]
        df_devices[df] = sorted(set(df_devices.get(df, [])) | set(s["devices"]))
    for m in merged:
        filters = m["device-filter"]
        spec_devices = sorted({d for df in filters for d in df_devices[df]})
        if len(df_devices) == 1:
            m["device-filter"] = None
        elif len(filters) == 1:
            m["device-filter"] = filters[0]
        if m["devices"] == spec_devices:
            m["devices"] = "all"
    if len(merged) == 1:
        merged[0]["device-filter"] = None
    return merged


def _yaml_scalar(value: str) -> str:
    """How yaml.v2 writes a string: plain unless it would read back as something else."""
    try:
        plain_ok = miniyaml.loads(f"k: {value}") == {"k": value}
    except miniyaml.YamlError:
        plain_ok = False
    return value if plain_ok else json.dumps(value)


def render_export(label: str, specs: list[dict[str, Any]], output_format: str) -> str:
    if output_format == "json":
        entries = [{k: v for k, v in s.items() if not (k == "device-filter" and v is None)} for s in specs]
        return json.dumps({"version": "v1", "mig-configs": {label: entries}}, indent=2)
    lines = ["version: v1", "mig-configs:", f"  {_yaml_scalar(label)}:"]
    for s in specs:
        first = True
        for key in ("device-filter", "devices", "mig-enabled", "mig-devices"):
            value = s[key]
            if key == "device-filter" and value is None:
                continue
            if isinstance(value, list):
                text = "[" + ", ".join(_yaml_scalar(v) if isinstance(v, str) else str(v) for v in value) + "]"
            elif isinstance(value, bool):
                text = str(value).lower()
            elif isinstance(value, dict):
                text = "{}" if not value else ""
            else:
                text = _yaml_scalar(str(value))
            lines.append(f"  {'- ' if first else '  '}{key}:" + (f" {text}" if text else ""))
            first = False
            if isinstance(value, dict):
                lines += [f"      {_yaml_scalar(k)}: {v}" for k, v in sorted(value.items())]
    return "\n".join(lines) + "\n"


def cmd_export(flags: Flags, log: Log) -> int:
    if flags.output_format not in ("json", "yaml"):
        raise Fatal(f"unrecognized 'output-format': {flags.output_format}")
    with st.session() as state:
        specs = export_specs(state)
    sys.stdout.write(render_export(flags.config_label, specs, flags.output_format))
    return 0


def generate_config(state: State) -> str:
    """A v1 config for the GPUs present: all-disabled, all-enabled and all-<profile> (each profile as many times as
    the GPU holds it), filtered by PCI device id. Simpler than the real generate-config (no mixed layouts)."""
    models = []
    for gpu in state.gpus:
        if gpu.spec not in models:
            models.append(gpu.spec)
    lines = ["version: v1", "mig-configs:", "  all-disabled:", "    - devices: all", "      mig-enabled: false", ""]
    lines += ["  all-enabled:", "    - devices: all", "      mig-enabled: true", "      mig-devices: {}", ""]
    names = [p.name for model in models for p in model.profiles]
    for name in dict.fromkeys(names):
        lines.append(f"  {_yaml_scalar('all-' + name)}:")
        for model in models:
            profile = model.profile_by_name(name)
            if profile is None:
                continue
            lines += [f'    - device-filter: ["{model.device_id}"]', "      devices: all", "      mig-enabled: true", "      mig-devices:"]
            lines.append(f'        "{name}": {profile.instances}')
        lines.append("")
    return "\n".join(lines)


def cmd_generate_config(argv: list[str], log: Log) -> int:
    output = ""
    i = 0
    while i < len(argv):
        arg, eq, inline = argv[i].partition("=")
        if arg in ("-f", "--output-file"):
            if not eq and i + 1 >= len(argv):
                raise Fatal(f"flag needs an argument: {arg}")
            output = inline if eq else argv[i + 1]
            i += 0 if eq else 1
        else:
            raise Fatal(f"flag provided but not defined: {arg}")
        i += 1
    with st.session() as state:
        text = generate_config(state)
    if not output:
        sys.stdout.write(text)
        return 0
    try:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise Fatal(f"error writing output file: open {output}: {(error.strerror or '').lower()}") from None
    log.debug(f"Generated config written to {output}")
    return 0


def main(argv: list[str], version: str = VERSION) -> int:
    """The command line; ``version`` is what --version prints (the .deb's wrapper passes its package version)."""
    debug = os.environ.get("MIG_PARTED_DEBUG", "").lower() in ("1", "true", "t")
    args = list(argv)
    while args and args[0].startswith("-"):
        arg = args.pop(0)
        if arg in ("-d", "--debug"):
            debug = True
        elif arg in ("-v", "--version"):
            print(f"nvidia-mig-parted version {version} (simulated)")
            return 0
        else:
            print(f"Incorrect Usage: flag provided but not defined: {arg}", file=sys.stderr)
            return 1
    log = Log(debug)
    commands = {"apply": cmd_apply, "assert": cmd_assert, "export": cmd_export}
    if args and args[0] == "generate-config":
        try:
            return cmd_generate_config(args[1:], log)
        except Fatal as error:
            log.line("fatal", capitalize(str(error)))
            return 1
        except st.StateMissing as error:
            log.line("fatal", "Error initializing NVML: Driver Not Loaded")
            log.note(f"no state file {error.args[0]} (run gpu-sim init)")
            return 1
    if not args or args[0] not in commands:
        simulated = ", ".join([*commands, "generate-config"])
        print(f"gpu-sim: nvidia-mig-parted: expected one of {simulated} (others are not simulated)", file=sys.stderr)
        return 1
    try:
        flags = parse_flags(args[0], args[1:])
        return commands[args[0]](flags, log)
    except Fatal as error:
        log.line("fatal", capitalize(str(error)))
        return 1
    except st.StateMissing as error:
        log.line("fatal", "Error initializing NVML: Driver Not Loaded")
        log.note(f"no state file {error.args[0]} (run gpu-sim init)")
        return 1
