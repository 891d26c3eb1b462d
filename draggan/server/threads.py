"""The process's CPU thread policy: torch threads × concurrent jobs ≤ the cores this process may use.

torch's intra-op thread count is one number for the whole process, shared by every job running in it. With
torch's default (all physical cores) two concurrent drags on a 2-vCPU machine each start as many threads as
there are cores and slow each other down tenfold (issue 11: 3.37 s/step against 0.34 s/step with one thread).
So the app sets it once at start-up: `DRAGGAN_TORCH_THREADS`, else `max(1, cores // concurrency)`; and on a
CPU device, where every job computes on those cores, the running jobs are capped at `max(1, cores // threads)`.

`usable_cores()` counts what the process may really use: its CPU affinity, bounded by a cgroup CPU quota
(a container such as a free Space sees the host's cores in `os.cpu_count()` but gets 2 vCPUs of time).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch

from .. import settings

CGROUP = Path("/sys/fs/cgroup")


def _cgroup_quota(root: Path = CGROUP) -> float | None:
    """CPUs granted by a cgroup quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`); None if none."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores(cgroup_root: Path = CGROUP) -> int:
    """CPU cores this process may use: affinity (else `os.cpu_count()`), bounded by a cgroup quota; ≥ 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


@dataclasses.dataclass(frozen=True)
class ThreadPolicy:
    """How many jobs run at once and how many torch threads each may use."""

    cores: int
    concurrency: int      # jobs (drags, inversions, replays) that may run at the same time
    threads: int          # torch intra-op threads of the process


def thread_policy(device_type: str, cores: int | None = None, config: settings.Settings | None = None
                  ) -> ThreadPolicy:
    """The policy for a process whose jobs run on `device_type` (see the module docstring)."""
    config = config or settings.get()
    cores = usable_cores() if cores is None else max(1, int(cores))
    concurrency = config.concurrency_for(device_type)
    threads = config.torch_threads or max(1, cores // concurrency)
    if device_type == "cpu":
        concurrency = min(concurrency, max(1, cores // threads))
    return ThreadPolicy(cores=cores, concurrency=concurrency, threads=threads)


def apply_thread_policy(policy: ThreadPolicy) -> None:
    """Set torch's thread count for the process (once, at start-up: it changes every running job's)."""
    if torch.get_num_threads() != policy.threads:
        torch.set_num_threads(policy.threads)
