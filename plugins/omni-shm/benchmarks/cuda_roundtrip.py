"""CUDA tensor GPU -> shared memory -> GPU across two processes, through SharedMemoryConnector.

    python cuda_roundtrip.py [--reps N] [--device cuda:0]

The producer (this process) puts a CUDA tensor: the serializer copies it device -> host straight into the
connector's slab, which is registered as pinned memory.  The consumer (a child process) gets it with
``device`` set, so it lands on the GPU again (host -> device from its pinned mapping of the same slab).
One repetition is timed from just before ``put`` to the consumer's tensor being ready on its GPU
(``torch.cuda.synchronize``); the key travels over a pipe.  Prints GB/s (min and median) for 64 MiB and
1 GiB and checks the data.  Exits 0 with a message when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SIZES = {"64 MiB": 64 << 20, "1 GiB": 1 << 30}
NAMESPACE = "cudaroundtrip"


def pattern(nbytes: int, device: str):
    """A float16 tensor of ``nbytes`` whose values are exact (so equality is a real check)."""
    import torch

    return (torch.arange(nbytes // 2, device=device, dtype=torch.int32) % 2039).to(torch.float16)


def connector(device: str | None):
    from omni_shm.connector import SharedMemoryConnector

    return SharedMemoryConnector({"namespace": NAMESPACE, "device": device, "keep_idle_bytes": 4 << 30})


def consume(device: str) -> None:
    import torch

    torch.cuda.init()
    reader = connector(device)
    expected: dict[int, object] = {}
    print("ready", flush=True)
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("done"):
            break
        result = reader.get("0", "1", message["key"])
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - message["t0"]
        ok = result is not None and result[0].device == torch.device(device)
        if ok and message["check"]:
            nbytes = message["nbytes"]
            expected.setdefault(nbytes, pattern(nbytes, device))
            ok = bool(torch.equal(result[0], expected[nbytes]))
        del result
        print(json.dumps({"seconds": elapsed, "ok": ok}), flush=True)
    reader.close()


def produce(device: str, reps: int) -> int:
    import torch

    child = subprocess.Popen([sys.executable, __file__, "--consume", "--device", device],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        print("consumer did not start", file=sys.stderr)
        return 1
    writer = connector(None)
    all_ok = True
    try:
        for label, nbytes in SIZES.items():
            tensor = pattern(nbytes, device)
            torch.cuda.synchronize()
            times = []
            for i in range(reps + 1):  # the first repetition maps and pins the slabs: not timed
                key = f"cuda-{nbytes}-{i}"
                t0 = time.perf_counter()
                ok, _, _ = writer.put("0", "1", key, tensor)
                assert ok, "put failed"
                child.stdin.write(json.dumps({"key": key, "t0": t0, "nbytes": nbytes, "check": i < 2}) + "\n")
                child.stdin.flush()
                answer = json.loads(child.stdout.readline())
                all_ok = all_ok and answer["ok"]
                if i:
                    times.append(answer["seconds"])
            best, median = min(times), statistics.median(times)
            print(
                f"{label:>7}: GPU -> shm -> GPU (other process)"
                f"  min {best * 1e3:8.2f} ms = {nbytes / best / 1e9:6.2f} GB/s"
                f"  median {median * 1e3:8.2f} ms = {nbytes / median / 1e9:6.2f} GB/s"
                f"  data {'ok' if all_ok else 'WRONG'}",
                flush=True,
            )
            del tensor
        child.stdin.write(json.dumps({"done": True}) + "\n")
        child.stdin.flush()
    finally:
        writer.close()
        child.stdin.close()
        child.wait()
    return 0 if all_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--consume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (this script needs a GPU)")
        return 0
    if args.consume:
        consume(args.device)
        return 0
    print(f"{torch.cuda.get_device_name(args.device)}, torch {torch.__version__}")
    return produce(args.device, args.reps)


if __name__ == "__main__":
    raise SystemExit(main())
