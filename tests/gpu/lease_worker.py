"""A real mlkit-like process for the ledger tests: reserve GPUs, hold them, record when.

    python lease_worker.py RUN_ID COUNT HOLD_S RESULT_FILE [WAIT_S]

Writes {"run", "uuids", "start", "end"} (wall clock, inside the lease) to RESULT_FILE. With HOLD_S
< 0 it prints "ready <uuids>" and holds until killed.
"""

from __future__ import annotations

import json
import os
import sys
import time

from mlkit.gpu import GpuRequest, reserve


def main() -> None:
    run_id, count, hold, result = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    wait = float(sys.argv[5]) if len(sys.argv) > 5 else None
    with reserve(GpuRequest.parse(count), run_id=run_id, owner_pid=os.getpid(), wait=wait) as lease:
        start = time.time()
        if hold < 0:
            print("ready", ",".join(lease.uuids), flush=True)
            while True:
                time.sleep(60)
        time.sleep(hold)
        end = time.time()
    with open(result, "w") as fh:
        json.dump({"run": run_id, "uuids": lease.uuids, "start": start, "end": end}, fh)


if __name__ == "__main__":
    main()
