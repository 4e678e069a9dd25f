# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: the GPU reader - read a node's GPUs and MIG state through NVML or nvidia-smi (the
``backend`` option chooses; ``auto`` falls back), every command bounded in time.

Not a public API; may change without notice. Shared by the mig_info, mig_verify and mig_node_state modules, which
take the options of ``gpu_backend_argument_spec()`` (documented once, in the doc fragment
``gpu_ops.mig_serving._gpu_backend``; ``BACKENDS`` is the one list of backends).

Why the bound is a SIGALRM in the module process: ``AnsibleModule.run_command`` has no timeout, and a hung driver
leaves ``nvidia-smi`` in an uninterruptible ioctl where even SIGKILL waits, so killing the child from a timer cannot
end ``run_command``'s wait. The alarm interrupts the module's own wait on the command's pipes instead; its handler
raises an exception that ``run_command`` does not catch (a BaseException, past its ``except Exception``),
the child is then sent SIGKILL (``before_communicate_callback`` hands us its ``Popen``) and reaped if it dies within
a few seconds. No ``subprocess`` call of our own and nothing on the node beyond Python (coreutils ``timeout`` is not
needed). NVML calls run in the module process itself: they are bounded by a worker thread the module stops waiting
for (see ``_nvml.collect``).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _nvidia_smi, _nvml

BACKENDS = ("auto", "nvml", "nvidia_smi")

# Seconds one command (or the whole NVML read) may take. A generous bound: on a real node each nvidia-smi listing
# returns in about a second (more without persistence mode, as the driver initialises each GPU); a minute means
# the driver is hung, not slow. The largest value accepted is an hour: a bigger number is most likely milliseconds.
DEFAULT_TIMEOUT = 60
MAX_TIMEOUT = 3600
# How long a killed command is waited for before it is left behind (a process in the kernel cannot die at once).
_REAP_SECONDS = 5


def timeout_argument_spec() -> Dict[str, Dict[str, Any]]:
    """The ``timeout`` option of a module whose commands run bounded (``run_bounded``; check it with ``timeout_problem``),
    a new copy each call."""
    return {"timeout": {"type": "int", "default": DEFAULT_TIMEOUT}}


def gpu_backend_argument_spec() -> Dict[str, Dict[str, Any]]:
    """The options every GPU-reading module takes (doc fragment gpu_ops.mig_serving._gpu_backend), a new copy each call."""
    return {
        "backend": {"type": "str", "choices": list(BACKENDS), "default": "auto"},
        "nvidia_smi_path": {"type": "path"},
        **timeout_argument_spec(),
    }


_DRIVER_HINT = (
    "the NVIDIA driver may be hung: look for Xid errors in the kernel log (dmesg) and run the command by hand; "
    "raise the timeout option only if the node is merely slow"
)

_SLOW_HINT = "the node may be overloaded: run the command by hand, and raise the timeout option only if it is merely slow"

Runner = Callable[[List[str]], Tuple[int, str, str]]


class GpuReadError(RuntimeError):
    """The GPUs could not be read with the requested backend."""


class CommandTimeout(RuntimeError):
    """A command did not finish within its bound; the message names the command and the limit."""

    def __init__(self, command: str, timeout: int, hint: str, left_running: Optional[int] = None) -> None:
        self.command = command
        self.timeout = timeout
        left = f" (pid {left_running} did not exit after SIGKILL and was left behind)" if left_running else ""
        super().__init__(f"{command} did not finish within {timeout} s (timeout) and was killed{left}; {hint}")


class _Expired(BaseException):
    """Raised by the SIGALRM handler. A BaseException, so that run_command's ``except Exception`` lets it through."""


def timeout_problem(value: Any) -> Optional[str]:
    """Why ``value`` is not a usable timeout (whole seconds, 1..MAX_TIMEOUT), or None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_TIMEOUT:
        return (
            f"timeout must be a whole number of seconds from 1 to {MAX_TIMEOUT}, got {value!r}; "
            f"the default {DEFAULT_TIMEOUT} s is a generous bound for one nvidia-smi or NVML read"
        )
    return None


def bounded_module(doing: str, argument_spec: Dict[str, Any], **kwargs: Any) -> Any:
    """The module object of a module whose commands run bounded: check mode supported, and its ``timeout`` option
    checked before anything else, failing with ``<doing>: <why>`` (so bad input never reaches a command)."""
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **kwargs)
    problem = timeout_problem(module.params["timeout"])
    if problem:
        module.fail_json(msg=f"{doing}: {problem}")
    return module


def _shown(argv: List[str]) -> str:
    return " ".join([os.path.basename(argv[0]), *argv[1:]])


def _kill(procs: List[Any]) -> Optional[int]:
    """SIGKILL the command; return its pid if it is still there after _REAP_SECONDS (stuck in the kernel)."""
    left: Optional[int] = None
    for proc in procs:
        with contextlib.suppress(OSError):  # gone already
            proc.kill()
        try:
            proc.wait(timeout=_REAP_SECONDS)
        except Exception:  # subprocess.TimeoutExpired: still in the kernel, left to init
            left = int(proc.pid)
        for pipe in (proc.stdout, proc.stderr, proc.stdin):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
    return left


def run_bounded(module: Any, argv: List[str], timeout: int, hint: str = "", environ_update: Optional[Dict[str, str]] = None) -> Tuple[int, str, str]:
    """``module.run_command(argv)`` bounded by ``timeout`` seconds; raises CommandTimeout naming the command and limit."""
    problem = timeout_problem(timeout)
    if problem:
        raise ValueError(problem)
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        raise RuntimeError("run_bounded must run in the main thread (it bounds the command with SIGALRM)")
    procs: List[Any] = []
    armed = [True]

    def expired(signum: int, frame: Any) -> None:
        if armed[0]:
            raise _Expired()

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, float(timeout))
    try:
        result = module.run_command(argv, environ_update=environ_update, check_rc=False, before_communicate_callback=procs.append)
        armed[0] = False
        rc, out, err = result
        return int(rc), str(out), str(err)
    except _Expired:
        armed[0] = False
        raise CommandTimeout(_shown(argv), timeout, hint or _SLOW_HINT, _kill(procs)) from None
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)


def path_runner(module: Any, timeout: int) -> Runner:
    """A runner for commands looked up in PATH (C locale, bounded); rc 127 when the command is missing."""

    def run(argv: List[str]) -> Tuple[int, str, str]:
        binary = module.get_bin_path(argv[0])
        if binary is None:
            return 127, "", f"{argv[0]}: command not found"
        return run_bounded(module, [binary, *argv[1:]], timeout, environ_update={"LC_ALL": "C", "LANG": "C"})

    return run


def smi_runner(module: Any, path: Optional[str], timeout: int = DEFAULT_TIMEOUT) -> Runner:
    """A runner for nvidia-smi (``path`` or looked up), C locale, each run bounded by ``timeout`` seconds;
    raises GpuReadError for a bad path."""
    if path and not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise GpuReadError(f"nvidia_smi_path {path!r} is not an executable file")
    binary = path or module.get_bin_path("nvidia-smi", required=True)

    def run(argv: List[str]) -> Tuple[int, str, str]:
        # shown as "nvidia-smi ...", whatever the path, as the parsers name the commands
        rc, out, err = run_bounded(module, [binary, *argv], timeout, _DRIVER_HINT, {"LC_ALL": "C", "LANG": "C"})
        return rc, out, err

    return run


def read_gpus(
    module: Any, backend: str, nvidia_smi_path: Optional[str] = None, timeout: int = DEFAULT_TIMEOUT
) -> Tuple[List[Dict[str, Any]], str, str]:
    """Return ``(gpus, backend_used, note)``. ``auto`` prefers NVML and falls back to nvidia-smi,
    saying why in ``note``; a hung NVML is not a reason to fall back (nvidia-smi would hang on the same driver).
    Each nvidia-smi command, and the NVML read as a whole, is bounded by ``timeout`` seconds.
    Raises GpuReadError naming the backend and the cause."""
    if backend not in BACKENDS:
        raise GpuReadError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    problem = timeout_problem(timeout)
    if problem:
        raise GpuReadError(problem)
    note = ""
    if backend in ("auto", "nvml"):
        if not _nvml.available():
            if backend == "nvml":
                raise GpuReadError(
                    "backend 'nvml' needs the nvidia-ml-py Python package (import pynvml) on the node; "
                    "install it or use backend 'nvidia_smi'"
                )
            note = "NVML bindings (nvidia-ml-py) not importable; used nvidia-smi"
        else:
            try:
                return [dict(g) for g in _nvml.collect(timeout=timeout)], "nvml", note
            except _nvml.NvmlTimeout as exc:
                raise GpuReadError(f"reading GPUs through NVML: {exc}; {_DRIVER_HINT}") from None
            except _nvml.NvmlError as exc:
                if backend == "nvml":
                    raise GpuReadError(f"reading GPUs through NVML: {exc}") from None
                note = f"NVML failed ({exc}); used nvidia-smi"
    runner = smi_runner(module, nvidia_smi_path, timeout)
    try:
        gpus = _nvidia_smi.collect(runner)
    except (_nvidia_smi.NvidiaSmiError, CommandTimeout) as exc:
        raise GpuReadError(f"reading GPUs through nvidia-smi: {exc}") from None
    return [dict(g) for g in gpus], "nvidia_smi", note
