"""Mooncake Store status codes (``mooncake-store/include/types.h``); the Python API returns them as ints."""

from __future__ import annotations

INTERNAL_ERROR = -1
NO_AVAILABLE_HANDLE = -200
INVALID_PARAMS = -600
INVALID_REPLICA = -702
REPLICA_IS_NOT_READY = -703
OBJECT_NOT_FOUND = -704
OBJECT_ALREADY_EXISTS = -705
OBJECT_HAS_LEASE = -706
LEASE_EXPIRED = -707
TRANSFER_FAIL = -800
RPC_FAIL = -900
RPC_TIMEOUT = -901

_NAMES = {
    INTERNAL_ERROR: "INTERNAL_ERROR",
    NO_AVAILABLE_HANDLE: "NO_AVAILABLE_HANDLE (no space in the store's segments)",
    INVALID_PARAMS: "INVALID_PARAMS",
    INVALID_REPLICA: "INVALID_REPLICA",
    REPLICA_IS_NOT_READY: "REPLICA_IS_NOT_READY (still being written)",
    OBJECT_NOT_FOUND: "OBJECT_NOT_FOUND",
    OBJECT_ALREADY_EXISTS: "OBJECT_ALREADY_EXISTS",
    OBJECT_HAS_LEASE: "OBJECT_HAS_LEASE",
    LEASE_EXPIRED: "LEASE_EXPIRED",
    TRANSFER_FAIL: "TRANSFER_FAIL (segment owner unreachable?)",
    RPC_FAIL: "RPC_FAIL (master unreachable?)",
    RPC_TIMEOUT: "RPC_TIMEOUT (master unreachable?)",
}

#: Failures reported before any I/O was submitted or after it completed: the buffers are free to reuse.
#: Any other failure (a transfer timeout, say) may leave I/O in flight, so its buffers must be retained.
SAFE_PUT_FAILURES = frozenset(
    {NO_AVAILABLE_HANDLE, REPLICA_IS_NOT_READY, OBJECT_NOT_FOUND, OBJECT_ALREADY_EXISTS, RPC_FAIL, RPC_TIMEOUT}
)
SAFE_GET_FAILURES = SAFE_PUT_FAILURES | {INVALID_PARAMS, INVALID_REPLICA, LEASE_EXPIRED}
#: Codes of a read that mean "not (completely) there yet".
NOT_THERE = frozenset({OBJECT_NOT_FOUND, REPLICA_IS_NOT_READY})


def describe(code: int) -> str:
    """``"RPC_FAIL (master unreachable?) [-900]"`` for a status code."""
    return f"{_NAMES.get(code, 'UNKNOWN')} [{code}]"
