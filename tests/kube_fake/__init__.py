# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""An in-memory Kubernetes API server over HTTPS for tests: see server.py and README.md."""
from __future__ import annotations

from .crds import load_crds
from .server import RESOURCES, ApiError, FakeKube, RecordedRequest, ResourceType

__all__ = ["RESOURCES", "ApiError", "FakeKube", "RecordedRequest", "ResourceType", "load_crds"]
