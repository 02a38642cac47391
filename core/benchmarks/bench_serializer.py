"""OmniSerializer against msgpack and msgspec: encode + decode of request dicts, in one run.

    python bench_serializer.py --out DIR [--quick]

Each contestant turns the payload into bytes and back: OmniSerializer ``serialize`` + ``deserialize``
(a full frame: header, msgpack meta, with its decode limits and type checks), msgpack ``packb`` +
``unpackb`` and msgspec ``Encoder.encode`` + ``Decoder.decode`` (plain msgpack, no checks).  Timing is
in rounds of ``BATCH`` calls, the contestants interleaved round by round (which goes first rotates),
so background load hits all alike; min and median are over the round means.  Payloads: the 1 KiB
request dict the shared-memory benchmark sends (150 token ids) and the same with 2000 token ids.

Writes ``results.json``, ``results.md`` and ``summary.json`` (ratio to the fastest library; target
``<= 1.2`` at 1 KiB) into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import msgspec

from omni_core.samples import request_dict
from omni_core.serialization import OmniSerializer

BATCH = 200
PAYLOADS = {"request dict, 150 token ids": 150, "request dict, 2000 token ids": 2000}
TARGET = "<= 1.2"


def contestants() -> dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
    """name -> (encode, decode)."""
    encoder, decoder = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
    return {
        "OmniSerializer": (OmniSerializer.serialize, OmniSerializer.deserialize),
        "msgpack": (lambda obj: msgpack.packb(obj, use_bin_type=True), msgpack.unpackb),
        "msgspec": (encoder.encode, decoder.decode),
    }


def measure(payload: Any, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per contestant and step (encode, decode, both): the mean seconds of one call in each round."""
    funcs = contestants()
    for name, (encode, decode) in funcs.items():
        if decode(encode(payload)) != payload:
            raise SystemExit(f"{name} does not round-trip the payload")
    samples: dict[str, dict[str, list[float]]] = {name: {"encode": [], "decode": []} for name in funcs}
    names = list(funcs)
    for i in range(rounds + 1):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            encode, decode = funcs[name]
            blob = encode(payload)
            start = time.perf_counter()
            for _ in range(BATCH):
                encode(payload)
            middle = time.perf_counter()
            for _ in range(BATCH):
                decode(blob)
            end = time.perf_counter()
            if i:  # the first round warms up
                samples[name]["encode"].append((middle - start) / BATCH)
                samples[name]["decode"].append((end - middle) / BATCH)
    for steps in samples.values():
        steps["both"] = [a + b for a, b in zip(steps["encode"], steps["decode"], strict=True)]
    return samples


def rows_for(label: str, nbytes: int, samples: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    rows = []
    for name, steps in samples.items():
        for step, values in steps.items():
            rows.append({"payload": label, "bytes": nbytes, "serializer": name, "step": step,
                         "min_us": min(values) * 1e6, "median_us": statistics.median(values) * 1e6})  # fmt: skip
    return rows


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OmniSerializer encode + decode time over each library's (the fastest library carries the target)."""
    out = []
    for label in PAYLOADS:
        both = {r["serializer"]: r for r in rows if r["payload"] == label and r["step"] == "both"}
        ours = both.pop("OmniSerializer")
        fastest = min(both, key=lambda name: both[name]["median_us"])
        for name, ref in both.items():
            out.append({
                "connector": "OmniSerializer", "path": "encode + decode", "payload": label, "bytes": ours["bytes"],
                "reference": name, "measure": "serializer time / reference time",
                "min": ours["min_us"] / ref["min_us"], "median": ours["median_us"] / ref["median_us"],
                "target": TARGET if name == fastest and label == next(iter(PAYLOADS)) else "",
            })  # fmt: skip
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| payload | frame bytes | serializer | step | min µs | median µs |",
        "| --- | ---: | --- | --- | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['payload']} | {r['bytes']} | {r['serializer']} | {r['step']} | "
                     f"{r['min_us']:.2f} | {r['median_us']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rounds = 40 if args.quick else 300
    rows: list[dict[str, Any]] = []
    for label, token_ids in PAYLOADS.items():
        payload = request_dict(token_ids)
        rows += rows_for(label, len(OmniSerializer.serialize(payload)), measure(payload, rounds))
    command = " ".join([Path(sys.executable).name, *sys.argv])
    summary = {"command": command, "load_average": os.getloadavg(), "rows": summary_rows(rows)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    host = {"python": platform.python_version(), "msgpack": msgpack.version, "msgspec": msgspec.__version__}
    (args.out / "results.json").write_text(json.dumps({"command": command, "host": host, "rows": rows}, indent=2))
    table = markdown(rows)
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
