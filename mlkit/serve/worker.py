"""`python -m mlkit.serve.worker`: one process of `mlkit models serve --workers N`."""

from __future__ import annotations

import sys

from mlkit.serve.server import worker_main

if __name__ == "__main__":
    sys.exit(worker_main())
