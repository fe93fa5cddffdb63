"""Where `mlkit run` runs a project: `local` (this host, the supervisor in mlkit.runner) or
`slurm` (a batch job on a Slurm cluster, whose allocation runs the same supervisor on the run:
mlkit.backends.slurm). No backend has a daemon of its own."""

from __future__ import annotations

BACKENDS = ("local", "slurm")
