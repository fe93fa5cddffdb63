"""The Slurm backend: `mlkit run DIR --backend slurm` submits a batch job whose allocation runs
`mlkit run DIR --run-id RUN --backend local`, so the run is supervised by the same code as a local
one; the submit side only creates the run SCHEDULED and tags it with the job id.

The pieces:
- `config`: `--backend-config` and the site file -> sbatch options (pure)
- `script`: the batch script and the multi-node srun/torchrun plan (pure)
- `commands`: the Slurm client commands (sbatch, squeue, sacct, scancel), through mlkit.proc
- `status`: Slurm's view of jobs -> the run's status and failure reason (one squeue + one sacct)
- `submit`: create the run(s), write the script, sbatch; `cancel`; `follow`
- `job`: what the batch script executes inside the allocation
Nothing here imports torch or talks to Slurm at import time.
"""

from __future__ import annotations

JOB_ID_TAG = "mlkit.slurm.job_id"  # "123", or "123_4" for task 4 of array job 123
CLUSTER_TAG = "mlkit.slurm.cluster"
STATE_TAG = "mlkit.slurm.state"  # Slurm's last known state of the job (PENDING, RUNNING, ...)
FINAL_TAG = "mlkit.slurm.final"  # "1" once Slurm's end state was read and recorded
REASON_TAG = "mlkit.slurm.reason"  # the pending reason (Resources, Priority, QOS, ...)
NODES_TAG = "mlkit.slurm.nodes"
EXIT_TAG = "mlkit.slurm.exit_code"  # Slurm's ExitCode, "3:0"
RESTARTS_TAG = "mlkit.slurm.restart_count"
REQUEUED_TAG = "mlkit.slurm.requeued"
BACKEND_TAG = "mlflow.project.backend"


def asks_slurm(tags: dict[str, str], status: str) -> bool:
    """Whether a run's state is Slurm's to tell: it names its job, or it is a Slurm submission still
    SCHEDULED without one (its submitter was killed while sbatch ran; status.adopt_orphans)."""
    return JOB_ID_TAG in tags or (tags.get(BACKEND_TAG) == "slurm" and status == "SCHEDULED")
