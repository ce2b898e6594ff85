"""Memory of whole process trees (processes and all their descendants), sampled from /proc.

A send that forks (worker processes, a renderer) uses more memory than its own ``ru_maxrss``
shows. ``TreeMemory`` walks /proc every ``interval`` seconds from a thread, finds every
descendant of the given roots (by parent pid, since /proc/PID/task/TID/children is not in every
kernel) and sums, per sample, two figures over the tree:
- RSS (``/proc/PID/statm``): counts a page shared between a parent and its forked children once
  per process, so it over-counts a forked tree;
- PSS (``/proc/PID/smaps_rollup``): a page shared by N processes counts 1/N in each, so the sum
  over the tree counts it once: the honest total of a tree that forks.
It keeps the peak of each sum (not the sum of each process's peak). A child that is born and
dies between two samples is missed: the interval bounds what it can miss.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


def _parent_pids() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_bytes()
        except OSError:  # gone between the listing and the read
            continue
        # The command name (field 2) may hold spaces and parentheses: split after its last ")".
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def tree_pids(roots: list[int]) -> list[int]:
    """The roots (still alive) and every descendant of them."""
    children: dict[int, list[int]] = {}
    parents = _parent_pids()
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    todo = [pid for pid in roots if pid in parents]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_bytes().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size of one process (0 once it is gone, or for a zombie)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


class TreeMemory:
    """Samples the trees under ``roots`` in a thread between ``start()`` and ``stop()``."""

    def __init__(self, roots: list[int], interval: float = 0.05) -> None:
        self.roots = roots
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.max_processes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-memory", daemon=True)

    def start(self) -> TreeMemory:
        self._thread.start()
        return self

    def stop(self) -> TreeMemory:
        self._stop.set()
        self._thread.join()
        return self

    def sample(self) -> None:
        pids = tree_pids(self.roots)
        if not pids:
            return
        self.peak_rss = max(self.peak_rss, sum(rss_bytes(p) for p in pids))
        self.peak_pss = max(self.peak_pss, sum(pss_bytes(p) for p in pids))
        self.max_processes = max(self.max_processes, len(pids))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    @property
    def forks(self) -> bool:
        """Whether any root had a child of its own at some sample (then PSS is the honest sum)."""
        return self.max_processes > len(self.roots)

    @property
    def counted_mb(self) -> float:
        """The figure a memory target reads: the PSS sum when the tree forked, else the RSS sum."""
        return (self.peak_pss if self.forks else self.peak_rss) / MB

    @property
    def counted_kind(self) -> str:
        return "PSS sum" if self.forks else "RSS sum"
