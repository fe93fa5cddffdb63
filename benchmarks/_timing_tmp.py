"""Where the time of one `mlkit run` goes (segments of run_project)."""
import sys, time
T0 = time.perf_counter()
marks = []
def mark(name):
    marks.append((name, time.perf_counter()))
import mlkit.runner.session as S
import mlkit.runner.supervise as SU
mark("import session")
def wrap(mod, name):
    orig = getattr(mod, name)
    def inner(*a, **k):
        t = time.perf_counter()
        try:
            return orig(*a, **k)
        finally:
            marks.append((f"{name} ({(time.perf_counter()-t)*1000:.1f} ms)", time.perf_counter()))
    setattr(mod, name, inner)
for n in ("_validate", "_gpu_request", "_find_experiment", "plan_run", "execute", "_end"):
    if hasattr(S, n): wrap(S, n)
orig_stop = S._Heartbeat.stop
def stop(self):
    t = time.perf_counter(); orig_stop(self); marks.append((f"heartbeat.stop ({(time.perf_counter()-t)*1000:.1f} ms)", time.perf_counter()))
S._Heartbeat.stop = stop
for n in ("alive", "reap", "members"):
    o = getattr(SU._Tree, n)
    def mk(o, n):
        def f(self, *a):
            t = time.perf_counter(); r = o(self, *a); marks.append((f"tree.{n} ({(time.perf_counter()-t)*1000:.1f} ms)", time.perf_counter())); return r
        return f
    setattr(SU._Tree, n, mk(o, n))
from pathlib import Path
r = S.run_project(S.RunOptions(project_dir=Path(sys.argv[1]), env_manager="local", gpus="none", system_metrics_interval=0))
mark("done")
prev = T0
for name, t in marks:
    print(f"{(t-T0)*1000:8.1f} ms  +{(t-prev)*1000:6.1f}  {name}", file=sys.stderr); prev = t
