"""``omni vllm-kv CONFIG``: check a ``--kv-transfer-config`` for OmniKVConnector without starting vLLM."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from omni_core import ConfigError

from .config import check_role, parse_settings
from .registration import NAME


def check(config: dict) -> str:
    """A one-line summary of a valid kv_transfer_config; ConfigError names what is wrong."""
    if not isinstance(config, dict):
        raise ConfigError(f"kv_transfer_config must be a JSON object, got {type(config).__name__}")
    if config.get("kv_connector") != NAME:
        connector = config.get("kv_connector")
        raise ConfigError(f"kv_transfer_config: key 'kv_connector' must be {NAME!r}, got {connector!r}")
    role = check_role(config.get("kv_role"))
    settings = parse_settings(config.get("kv_connector_extra_config"))
    policy = config.get("kv_load_failure_policy", "fail")
    note = "" if role == "kv_producer" or policy == "recompute" else (
        "; note: kv_load_failure_policy is not 'recompute', so a failed load fails its request")  # fmt: skip
    return (f"{NAME} {role} over {settings.connector.name} {json.dumps(settings.connector.extra, sort_keys=True)}, "
            f"namespace {settings.namespace!r}{note}")  # fmt: skip


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="omni vllm-kv", description=__doc__)
    parser.add_argument("config", help="the --kv-transfer-config JSON, or a file holding it")
    args = parser.parse_args(argv)
    try:
        text = args.config if args.config.lstrip().startswith("{") else Path(args.config).read_text()
        print(check(json.loads(text)))
    except (ConfigError, json.JSONDecodeError, OSError) as exc:
        print(f"omni vllm-kv: {exc}", file=sys.stderr)
        return 1
    return 0
