"""sha256 on the run path without loading OpenSSL.

`hashlib` loads OpenSSL's libcrypto (`_hashlib`) on import: 5-15 ms of every `mlkit run` on a
small VM, for hashing one MLproject file. CPython's own sha256 module (`_sha256`, `_sha2` from
3.12) gives the same digest and loads in well under a millisecond; hashlib stays the fallback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def _constructor() -> Callable[[bytes], Any]:
    try:
        if sys.version_info >= (3, 12):
            # import budget: CPython's own sha256, loaded only when something is hashed
            from _sha2 import sha256
        else:
            # import budget: CPython's own sha256 (3.11 calls it _sha256), loaded only when hashing
            from _sha256 import sha256  # type: ignore[import-not-found]  # no stub for it
    except ImportError:
        # import budget: OpenSSL's hashlib only where CPython has no sha256 module of its own
        from hashlib import sha256
    return sha256


def sha256_hex(data: bytes) -> str:
    """The sha256 hex digest of `data` (the same as hashlib.sha256(data).hexdigest())."""
    return str(_constructor()(data).hexdigest())
