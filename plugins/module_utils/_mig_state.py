# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: read a node's GPUs and MIG state through NVML or nvidia-smi.

Not a public API; may change without notice. Shared by the mig_info and mig_verify modules.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _nvidia_smi, _nvml

BACKENDS = ("auto", "nvml", "nvidia_smi")


class GpuReadError(RuntimeError):
    """The GPUs could not be read with the requested backend."""


def _nvidia_smi_runner(module: Any, path: Optional[str]) -> Any:
    if path and not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise GpuReadError(f"nvidia_smi_path {path!r} is not an executable file")
    binary = path or module.get_bin_path("nvidia-smi", required=True)

    def run(argv: List[str]) -> Tuple[int, str, str]:
        rc, out, err = module.run_command(
            [binary, *argv], environ_update={"LC_ALL": "C", "LANG": "C"}, check_rc=False
        )
        return rc, out, err

    return run


def smi_runner(module: Any, path: Optional[str]) -> Any:
    """A runner for nvidia-smi (``path`` or looked up), C locale; raises GpuReadError for a bad path."""
    return _nvidia_smi_runner(module, path)


def read_gpus(module: Any, backend: str, nvidia_smi_path: Optional[str] = None) -> Tuple[List[Dict[str, Any]], str, str]:
    """Return ``(gpus, backend_used, note)``. ``auto`` prefers NVML and falls back to nvidia-smi,
    saying why in ``note``. Raises GpuReadError naming the backend and the cause."""
    if backend not in BACKENDS:
        raise GpuReadError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
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
                return [dict(g) for g in _nvml.collect()], "nvml", note
            except _nvml.NvmlError as exc:
                if backend == "nvml":
                    raise GpuReadError(f"reading GPUs through NVML: {exc}") from None
                note = f"NVML failed ({exc}); used nvidia-smi"
    runner = _nvidia_smi_runner(module, nvidia_smi_path)
    try:
        gpus = _nvidia_smi.collect(runner)
    except _nvidia_smi.NvidiaSmiError as exc:
        raise GpuReadError(f"reading GPUs through nvidia-smi: {exc}") from None
    return [dict(g) for g in gpus], "nvidia_smi", note
