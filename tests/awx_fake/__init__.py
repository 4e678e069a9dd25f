# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test equipment for playbooks/awx_configure.yml: the awx.awx collection, installed for tests only, and a fake AWX API."""
from __future__ import annotations

from .collection import AWX_COLLECTION_VERSION, ensure_awx_collection
from .server import FakeAWX

__all__ = ["AWX_COLLECTION_VERSION", "FakeAWX", "ensure_awx_collection"]
