"""CUDA tensors end to end through MooncakeTransferEngineConnector: GPU pool -> TCP -> GPU pool, two processes.

    python gpu_e2e.py [--device cuda:0] [--sizes-mib 16,256,1024] [--reps 5] [--protocol tcp]

Needs the CUDA wheel (``pip install 'omni-mooncake[cuda]'``) and a CUDA build of torch.  The sender (this
process) keeps its memory pool on the GPU (``memory_pool_device``) and puts a CUDA tensor (one
device-to-device copy into the pool); a receiver process with its own GPU pool gets it with the put
metadata, so the TransferEngine moves GPU memory to GPU memory over TCP.  The receiver times its ``get``
(until the data is on its GPU), checks the tensor against the expected pattern on the device, and
answers over a pipe (JSON).  Prints GB/s (min and median) per size.  Exits 0 with a message when there
is no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

MIB = 1 << 20


def pattern(nbytes: int, seed: int, device: str) -> Any:
    """A deterministic uint8 CUDA tensor of ``nbytes`` (a multiple of 8)."""
    import torch

    return torch.arange(nbytes // 8, dtype=torch.int64, device=device).mul_(2654435761).add_(seed).view(torch.uint8)


def connector(role: str, device: str, pool: int, protocol: str) -> Any:
    from omni_mooncake.te_connector import MooncakeTransferEngineConnector

    extra = {"role": role, "host": "127.0.0.1", "protocol": protocol, "memory_pool_size": pool,
             "memory_pool_device": device}  # fmt: skip
    if role == "sender":
        extra["zmq_port"] = 0
    return MooncakeTransferEngineConnector(extra)


def receiver_main(device: str, pool: int, protocol: str) -> int:
    import torch

    receiver = connector("receiver", device, pool, protocol)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "close":
            break
        start = time.perf_counter()
        result = receiver.get("0", "1", command["key"], command["metadata"])
        torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        if result is None:
            print(json.dumps({"ok": False}), flush=True)
            continue
        tensor = result[0].payload(copy=False)
        equal = bool(tensor.is_cuda and torch.equal(tensor, pattern(command["bytes"], command["seed"], device)))
        result[0].release()
        print(json.dumps({"ok": True, "seconds": seconds, "equal": equal, "on": str(tensor.device)}), flush=True)
    receiver.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--receiver-device", default=None, help="default: the same device")
    parser.add_argument("--sizes-mib", default="16,256,1024")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--protocol", default="tcp")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        print("gpu_e2e: no CUDA device (torch.cuda.is_available() is False): nothing to measure, exiting 0")
        return 0
    if args.child:
        return receiver_main(args.device, args.pool, args.protocol)
    sizes = [int(s) * MIB for s in args.sizes_mib.split(",")]
    pool = max(sizes) + 64 * MIB
    try:
        sender = connector("sender", args.device, pool, args.protocol)
    except ImportError as exc:
        print(f"gpu_e2e: {exc}", file=sys.stderr)
        return 1
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", "--device", args.receiver_device or args.device,
         "--pool", str(pool), "--protocol", args.protocol],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    if not json.loads(child.stdout.readline()).get("ready"):
        print("gpu_e2e: the receiver process did not start", file=sys.stderr)
        return 1
    failures = 0
    print(f"{'size':>9} {'put min ms':>11} {'get min ms':>11} {'get med ms':>11} {'get GB/s (med)':>15} {'equal':>6}")
    try:
        for nbytes in sizes:
            puts, gets, equal = [], [], True
            for rep in range(args.reps + 1):  # the first repetition warms the pools up
                payload = pattern(nbytes, rep, args.device)
                torch.cuda.synchronize(args.device)
                start = time.perf_counter()
                ok, _, metadata = sender.put("0", "1", f"gpu-{nbytes}-{rep}", payload)
                put_seconds = time.perf_counter() - start
                if not ok:
                    raise RuntimeError(f"put of {nbytes} bytes failed")
                command = {"op": "get", "key": f"gpu-{nbytes}-{rep}", "metadata": metadata, "bytes": nbytes,
                           "seed": rep}  # fmt: skip
                child.stdin.write(json.dumps(command) + "\n")
                child.stdin.flush()
                answer = json.loads(child.stdout.readline())
                if not answer["ok"]:
                    raise RuntimeError(f"get of {nbytes} bytes failed")
                equal = equal and answer["equal"]
                if rep:
                    puts.append(put_seconds)
                    gets.append(answer["seconds"])
            failures += not equal
            median = statistics.median(gets)
            print(f"{nbytes // MIB:>5} MiB {min(puts) * 1e3:>11.2f} {min(gets) * 1e3:>11.2f} {median * 1e3:>11.2f} "
                  f"{nbytes / median / 1e9:>15.2f} {equal!s:>6}")  # fmt: skip
    finally:
        child.stdin.write(json.dumps({"op": "close"}) + "\n")
        child.stdin.flush()
        child.wait(60)
        sender.close()
    if failures:
        print(f"gpu_e2e: {failures} size(s) arrived with different data", file=sys.stderr)
        return 1
    print("gpu_e2e: every tensor arrived intact on the receiver's GPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
