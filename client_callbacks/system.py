"""Samples of the process and the machine, logged beside the training in the `system` scope.

A thread of its own takes a sample every `interval` seconds, so the training thread never
waits for one: process CPU % (of one core: 200 is two busy cores) and resident memory,
machine memory used, and for each GPU its utilisation and memory through NVIDIA's NVML
(`nvidia-ml-py`, the `gpu` extra) when it is installed and finds a GPU. Step k is the
k-th sample of the client; its wall time says when it was taken.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import psutil

log = logging.getLogger("fitwatch")
MB = 2**20


class SystemSampler(threading.Thread):
    def __init__(self, log_sample: Callable[[dict[str, float]], None], interval: float) -> None:
        super().__init__(name="fitwatch-system", daemon=True)
        self.log_sample = log_sample
        self.interval = interval
        self.stopped = threading.Event()
        self.process = psutil.Process()
        self.gpus: Gpus | None = None

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        try:
            self.gpus = Gpus()  # here, not on the training thread: NVML takes a while to start
            self.process.cpu_percent(None)  # the first reading only starts the count
            while not self.stopped.wait(self.interval):
                self.log_sample(self.sample())
        except Exception as exc:  # a sample is never worth a training
            log.warning("fitwatch: system sampling stopped: %r", exc)
        finally:
            if self.gpus is not None:
                self.gpus.close()

    def sample(self) -> dict[str, float]:
        memory = psutil.virtual_memory()
        return {
            "cpu_percent": self.process.cpu_percent(None),
            "rss_mb": self.process.memory_info().rss / MB,
            "memory_used_mb": (memory.total - memory.available) / MB,
            "memory_percent": memory.percent,
            **(self.gpus.sample() if self.gpus else {}),
        }


class Gpus:
    """NVML's view of the GPUs; empty without nvidia-ml-py, a driver or a GPU."""

    def __init__(self) -> None:
        self.nvml: Any = None
        self.handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml  # from here on `close` shuts NVML down
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception:  # not installed, no driver, no GPU: no GPU series
            pass

    def sample(self) -> dict[str, float]:
        """What each GPU reports; a reading a GPU does not support (utilisation on a MIG
        slice) is left out, not the other readings."""
        out: dict[str, float] = {}
        for i, handle in enumerate(self.handles):
            for name, read in (("util_percent", self._util), ("memory_mb", self._memory)):
                try:
                    out[f"gpu{i}_{name}"] = read(handle)
                except Exception:
                    pass
        return out

    def _util(self, handle: Any) -> float:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu)

    def _memory(self, handle: Any) -> float:
        return self.nvml.nvmlDeviceGetMemoryInfo(handle).used / MB

    def close(self) -> None:
        if self.nvml is not None:
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass
