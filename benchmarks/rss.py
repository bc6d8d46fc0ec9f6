"""Peak resident memory of named process trees, sampled in a thread while a benchmark runs."""

from __future__ import annotations

import threading

import psutil


class PeakRss:
    """The resident set of named process trees (a server's supervisor and workers), sampled every 0.2 s in a thread;
    each one's peak in MB."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.peak: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def watch(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, pid in list(self.pids.items()):
                try:
                    root = psutil.Process(pid)
                    rss = sum(process.memory_info().rss for process in (root, *root.children(recursive=True)))
                except psutil.Error:
                    continue
                self.peak[name] = max(self.peak.get(name, 0.0), rss / 2**20)
