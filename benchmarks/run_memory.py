"""Memory of a whole process tree, sampled from outside it: PSS with shared memory counted once.

:class:`TreeSampler` watches a root process and all its descendants (pool workers, dask
nannies and workers, ...) from a background thread of *another* process (the benchmark driver),
so the sampling never takes the GIL of the process being measured. One sample is::

    sum over the tree of (Pss - Pss_Shmem)            private and file-backed memory, from
                                                      /proc/<pid>/smaps_rollup
    + max(sum over the tree of Pss_Shmem,             shared memory (POSIX shm, tmpfs memmaps,
          size of the /dev/shm files the tree maps,   shared anonymous maps), once: the files'
          holds open or created in joblib's folder)   allocated size when it is known

PSS already splits copy-on-write pages between the processes that share them. The second term
matters for tmpfs files that are only partly mapped or not mapped at all (joblib dumps its
memmaps to /dev/shm; a worker faults in only the pages it reads): their whole size is in RAM.
"""

from __future__ import annotations

import glob
import os
import threading
import time

DEV_SHM = "/dev/shm/"


def _rollup(pid: int) -> tuple[int, int]:
    pss = shmem = 0
    with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
        for line in fh:
            if line.startswith(b"Pss:"):
                pss = int(line.split()[1]) * 1024
            elif line.startswith(b"Pss_Shmem:"):
                shmem = int(line.split()[1]) * 1024
    return pss, shmem


def _shm_files(pid: int, into: set) -> None:
    with open(f"/proc/{pid}/maps", "rb") as fh:
        for line in fh:
            k = line.find(b" /dev/shm/")
            if k >= 0:
                into.add(line[k + 1:].rstrip(b"\n").decode(errors="replace"))
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        if target.startswith(DEV_SHM):
            into.add(target)
    for folder in glob.glob(f"{DEV_SHM}joblib_memmapping_folder_{pid}_*"):
        for root, _, files in os.walk(folder):
            into.update(os.path.join(root, f) for f in files)


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc/<pid>/task/<tid>/children (no /proc scan)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children", "rb") as fh:
                    stack.extend(int(c) for c in fh.read().split())
            except OSError:
                pass
    return out


def tree_memory(pid: int, files_cache: dict | None = None, refresh: bool = True) -> tuple[int, int]:
    """One sample of the tree rooted at ``pid``: (bytes, number of processes).

    ``files_cache`` (pid -> set of /dev/shm paths) saves rescanning every process's maps and
    descriptors at each sample: a process is scanned when first seen, and all again when
    ``refresh`` is true.
    """
    cache = {} if files_cache is None else files_cache
    private = shared = 0
    files: set = set()
    alive = 0
    for p in descendants(pid):
        try:
            pss, shmem = _rollup(p)
            if refresh or p not in cache:
                found: set = set()
                _shm_files(p, found)
                cache[p] = found
        except (OSError, ValueError):
            continue  # the process ended meanwhile
        files |= cache[p]
        private += pss - shmem
        shared += shmem
        alive += 1
    sizes = 0
    for path in files:
        if path.endswith(" (deleted)"):
            continue
        try:
            sizes += os.stat(path).st_blocks * 512
        except OSError:
            pass
    return private + max(shared, sizes), alive


class TreeSampler:
    """Sample :func:`tree_memory` every ``interval`` seconds; keep the peak of each phase.

    Reading PSS costs the kernel a page-table walk per process (~0.3-2 ms each on the 2-core
    test VM), so the sampler keeps its own CPU use under ``max_duty`` of one core: after a
    sample that took ``d`` seconds of CPU it waits ``max(interval, d / max_duty)``. The
    /dev/shm file scan is redone every ``rescan`` samples (and for every new process).

    ``phase`` names what the tree is doing ("cold", "warm", ...); samples taken while it is
    None only count towards ``peak_any``.
    """

    def __init__(self, pid: int, interval: float = 0.02, max_duty: float = 0.1,
                 rescan: int = 10) -> None:
        self.pid = pid
        self.interval = interval
        self.max_duty = max_duty
        self.rescan = rescan
        self._files: dict = {}
        self.cpu_s = 0.0
        self.phase: str | None = None
        self.peaks: dict[str, int] = {}
        self.peak_any = 0
        self.max_procs = 0
        self.samples = 0
        self._last_cpu = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-sampler", daemon=True)

    def baseline(self, samples: int = 3) -> int:
        """Minimum of a few samples (the tree at rest)."""
        values = []
        for _ in range(samples):
            values.append(tree_memory(self.pid, self._files)[0])
            time.sleep(self.interval)
        return min(values)

    def sample(self) -> None:
        phase = self.phase
        cpu = time.thread_time()
        value, procs = tree_memory(self.pid, self._files, refresh=self.samples % self.rescan == 0)
        self._last_cpu = time.thread_time() - cpu
        self.cpu_s += self._last_cpu
        with self._lock:
            self._record(phase, value, procs)

    def _record(self, phase: str | None, value: int, procs: int) -> None:
        self.samples += 1
        self.max_procs = max(self.max_procs, procs)
        self.peak_any = max(self.peak_any, value)
        if phase is not None:
            self.peaks[phase] = max(self.peaks.get(phase, 0), value)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(max(self.interval, self._last_cpu / self.max_duty))

    def set_phase(self, phase: str | None) -> None:
        if self.phase is not None and phase != self.phase:
            self.sample()  # close the phase with a last sample
        self.phase = phase
        if phase is not None:
            self.sample()

    def start(self) -> TreeSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
