"""System metrics of one run, sampled by a thread in the supervisor and logged with MLflow's names.

    sampler = SystemMetricsSampler(store, run_id, lease.uuids, interval=5)
    sampler.start(child.pid)        # NVML initialised once, here
    ...
    summary = sampler.stop()        # logs and returns the peak/mean/energy summary

Every `interval` seconds (0 = off) one tick logs, with `step` = the tick number:
- for the run's own GPUs only, `i` being the GPU's position in the run (0..n-1), MLflow's
  `system/gpu_<i>_utilization_percentage`, `_memory_usage_megabytes` (used / 1e6),
  `_memory_usage_percentage`, `_power_usage_watts`, `_power_usage_percentage`, and mlkit's
  `_temperature_celsius`, `_sm_clock_mhz`, `_throttle_reasons` (the NVML bitmask);
- MLflow's host metrics with MLflow's meaning: `system/cpu_utilization_percentage` (whole host),
  `system/system_memory_usage_megabytes` / `_percentage`, `system/disk_usage_*`,
  `system/network_*_megabytes` (since start);
- the run's process tree: `system/process_cpu_utilization_percentage` (100 = one core) and
  `system/process_memory_rss_megabytes`.
`stop()` adds `system/gpu_<i>_peak_memory_megabytes`, `system/gpu_<i>_mean_utilization_percentage`
and `system/gpu_<i>_energy_wh` (NVML's energy counter difference, else integrated power).
Nothing here raises into the supervisor: a failing tick is skipped and counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from mlkit.gpu import nvml
from mlkit.gpu.devices import temperature, throttle_mask

MB = 1e6  # MLflow's megabytes are decimal
TREE_RESCAN_TICKS = 5  # look for new child processes every 5th tick (and on the first)


@dataclass
class _GpuTrack:
    position: int
    uuid: str
    handle: Any = None
    power_limit_w: float | None = None
    energy_start_mj: int | None = None
    peak_memory_mb: float | None = None
    util_sum: float = 0.0
    util_n: int = 0
    power: list[tuple[float, float]] = field(default_factory=list)  # (monotonic s, W)


class SystemMetricsSampler:
    """Samples the run's GPUs and process tree in a daemon thread; see the module docstring."""

    def __init__(self, store: Any, run_id: str, gpu_uuids: list[str], interval: float = 5.0) -> None:
        self.store = store
        self.run_id = run_id
        self.gpu_uuids = list(gpu_uuids)
        self.interval = float(interval or 0)
        self.step = 0
        self.failed_ticks = 0
        self.errors: list[str] = []  # the first few failures, for debugging
        self._pid: int | None = None
        self._nv: ModuleType | None = None
        self._gpus: list[_GpuTrack] = []
        self._procs: dict[int, Any] = {}
        self._net_start: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._proc_peak_rss_mb: float | None = None
        self._started_at: float | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self, pid: int) -> None:
        """Watch `pid` and its descendants; initialise NVML once. A no-op when interval is 0."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._pid = pid
        self._started_at = time.monotonic()
        try:
            self._open_gpus()
            self._prime_host()
        except Exception as exc:  # never into the supervisor
            self._note(exc)
        self._thread = threading.Thread(target=self._loop, name="mlkit-system-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Stop sampling, log the summary and return it ({} when sampling was off)."""
        if self._thread is None:
            return {}
        self._stop.set()
        self._thread.join(timeout=max(5.0, self.interval + 5.0))
        summary: dict[str, float] = {}
        try:
            with self._lock:
                summary = self._summary()
            if summary:
                self.store.log_metrics(self.run_id, summary, step=self.step)
        except Exception as exc:
            self._note(exc)
        finally:
            self._close_gpus()
        try:
            tags = {"mlkit.system_metrics.ticks": str(self.step)}
            if self.failed_ticks:
                tags["mlkit.system_metrics.failed_ticks"] = str(self.failed_ticks)
            self.store.set_tags(self.run_id, tags)
        except Exception as exc:
            self._note(exc)
        return summary

    def __enter__(self) -> SystemMetricsSampler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self.tick()
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # fell behind (a suspended machine): skip, don't burst
                next_at = now + self.interval

    # --- one tick -----------------------------------------------------------------------------

    def tick(self) -> dict[str, float] | None:
        """Sample and log once; returns what was logged, None when the tick failed."""
        try:
            with self._lock:
                metrics = self.sample()
                self.store.log_metrics(self.run_id, metrics, step=self.step)
                self.step += 1
            return metrics
        except Exception as exc:
            self.failed_ticks += 1
            self._note(exc)
            return None

    def sample(self) -> dict[str, float]:
        metrics: dict[str, float] = {}
        now = time.monotonic()
        for track in self._gpus:
            metrics.update(self._sample_gpu(track, now))
        metrics.update(self._sample_host())
        metrics.update(self._sample_tree())
        return metrics

    def _sample_gpu(self, track: _GpuTrack, now: float) -> dict[str, float]:
        nv, h, p = self._nv, track.handle, f"system/gpu_{track.position}_"
        if nv is None or h is None:
            return {}
        out: dict[str, float] = {}
        try:
            util = nvml.query(nv, nv.nvmlDeviceGetUtilizationRates, h)
            mem = nvml.query(nv, nv.nvmlDeviceGetMemoryInfo, h, version=nv.nvmlMemory_v2)
            power_mw = nvml.query(nv, nv.nvmlDeviceGetPowerUsage, h)
            temp = temperature(nv, h)
            clock = nvml.query(nv, nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM)
            mask = throttle_mask(nv, h)
        except nv.NVMLError as exc:  # lost: skip this GPU this tick
            self._note(exc)
            return {}
        if util is not None:
            out[p + "utilization_percentage"] = float(util.gpu)
            track.util_sum += util.gpu
            track.util_n += 1
        if mem is not None:
            used_mb = mem.used / MB
            out[p + "memory_usage_megabytes"] = round(used_mb, 1)
            if mem.total:
                out[p + "memory_usage_percentage"] = round(mem.used / mem.total * 100, 1)
            track.peak_memory_mb = max(track.peak_memory_mb or 0.0, used_mb)
        if power_mw is not None:
            watts = power_mw / 1000.0
            out[p + "power_usage_watts"] = watts
            if track.power_limit_w:
                out[p + "power_usage_percentage"] = round(watts / track.power_limit_w * 100, 1)
            track.power.append((now, watts))
        if temp is not None:
            out[p + "temperature_celsius"] = float(temp)
        if clock is not None:
            out[p + "sm_clock_mhz"] = float(clock)
        if mask is not None:
            out[p + "throttle_reasons"] = float(mask)
        return out

    def _sample_host(self) -> dict[str, float]:
        import psutil  # import budget: `mlkit run` with metrics off never loads psutil

        vm = psutil.virtual_memory()
        out = {
            "system/cpu_utilization_percentage": round(psutil.cpu_percent(interval=None), 1),
            "system/system_memory_usage_megabytes": round(vm.used / MB, 1),
            "system/system_memory_usage_percentage": round(vm.used / vm.total * 100, 1),
        }
        try:
            disk = psutil.disk_usage("/")
            out["system/disk_usage_percentage"] = float(disk.percent)
            out["system/disk_usage_megabytes"] = round(disk.used / MB, 1)
            out["system/disk_available_megabytes"] = round(disk.free / MB, 1)
        except OSError:
            pass
        if self._net_start is not None:
            net = psutil.net_io_counters()
            if net is not None:
                out["system/network_receive_megabytes"] = (net.bytes_recv - self._net_start[0]) / MB
                out["system/network_transmit_megabytes"] = (net.bytes_sent - self._net_start[1]) / MB
        return out

    def _sample_tree(self) -> dict[str, float]:
        """CPU % and RSS of the watched process and its descendants (Process objects cached, so
        cpu_percent measures since the previous tick)."""
        import psutil  # import budget: `mlkit run` with metrics off never loads psutil

        if self._pid is None:
            return {}
        try:
            root = self._procs.get(self._pid) or psutil.Process(self._pid)
            if self.step % TREE_RESCAN_TICKS == 0 or not self._procs:
                # children() scans all of /proc (the costliest part of a tick): only every few ticks
                tree = [root, *root.children(recursive=True)]
            else:
                tree = list(self._procs.values())
        except psutil.Error:
            return {}  # the run has ended
        cpu = rss = 0.0
        seen: dict[int, Any] = {}
        for proc in tree:
            cached = self._procs.get(proc.pid, proc)
            try:
                with cached.oneshot():
                    pct = cached.cpu_percent(interval=None)
                    rss += cached.memory_info().rss
            except psutil.Error:
                continue
            if proc.pid in self._procs:  # a first reading of a new process is meaningless (0.0)
                cpu += pct
            seen[proc.pid] = cached
        self._procs = seen
        rss_mb = rss / MB
        self._proc_peak_rss_mb = max(self._proc_peak_rss_mb or 0.0, rss_mb)
        return {
            "system/process_cpu_utilization_percentage": round(cpu, 1),
            "system/process_memory_rss_megabytes": round(rss_mb, 1),
        }

    # --- setup, summary, teardown -------------------------------------------------------------

    def _open_gpus(self) -> None:
        if not self.gpu_uuids:
            return
        nv = nvml.load()
        nv.nvmlInit()
        self._nv = nv
        for position, uuid in enumerate(self.gpu_uuids):
            track = _GpuTrack(position, uuid)
            try:
                track.handle = nv.nvmlDeviceGetHandleByUUID(uuid.encode())
                limit = nvml.query(nv, nv.nvmlDeviceGetEnforcedPowerLimit, track.handle)
                track.power_limit_w = limit / 1000.0 if limit else None
                track.energy_start_mj = nvml.query(nv, nv.nvmlDeviceGetTotalEnergyConsumption, track.handle)
            except nv.NVMLError as exc:
                self._note(exc)
            self._gpus.append(track)

    def _prime_host(self) -> None:
        import psutil  # import budget: `mlkit run` with metrics off never loads psutil

        psutil.cpu_percent(interval=None)  # the first call only sets the baseline
        net = psutil.net_io_counters()
        self._net_start = (net.bytes_recv, net.bytes_sent) if net is not None else None
        if self._pid is not None:
            try:
                proc = psutil.Process(self._pid)
                proc.cpu_percent(interval=None)
                self._procs = {self._pid: proc}
            except psutil.Error:
                pass

    def _summary(self) -> dict[str, float]:
        out: dict[str, float] = {}
        now = time.monotonic()
        for track in self._gpus:
            p = f"system/gpu_{track.position}_"
            if track.peak_memory_mb is not None:
                out[p + "peak_memory_megabytes"] = round(track.peak_memory_mb, 1)
            if track.util_n:
                out[p + "mean_utilization_percentage"] = round(track.util_sum / track.util_n, 1)
            energy = self._energy_wh(track, now)
            if energy is not None:
                out[p + "energy_wh"] = round(energy, 6)
        if self._proc_peak_rss_mb is not None:
            out["system/process_peak_memory_rss_megabytes"] = round(self._proc_peak_rss_mb, 1)
        return out

    def _energy_wh(self, track: _GpuTrack, now: float) -> float | None:
        nv = self._nv
        if nv is not None and track.handle is not None and track.energy_start_mj is not None:
            try:
                end = nvml.query(nv, nv.nvmlDeviceGetTotalEnergyConsumption, track.handle)
            except nv.NVMLError:
                end = None
            if end is not None and end >= track.energy_start_mj:
                return (end - track.energy_start_mj) / 3.6e6  # mJ -> Wh
        samples = track.power
        if not samples:
            return None
        # Integrate power over the run: trapezoids between ticks, the first reading held back to
        # the start and the last one held until now.
        start = self._started_at if self._started_at is not None else samples[0][0]
        joules = samples[0][1] * max(0.0, samples[0][0] - start)
        for (t0, w0), (t1, w1) in zip(samples, samples[1:], strict=False):
            joules += (w0 + w1) / 2 * (t1 - t0)
        joules += samples[-1][1] * max(0.0, now - samples[-1][0])
        return joules / 3600.0

    def _close_gpus(self) -> None:
        if self._nv is not None:
            try:
                self._nv.nvmlShutdown()
            except Exception:
                pass
            self._nv = None

    def _note(self, exc: BaseException) -> None:
        if len(self.errors) < 10:
            self.errors.append(f"{type(exc).__name__}: {exc}")
