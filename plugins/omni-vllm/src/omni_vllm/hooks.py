"""Entry-point hooks of omni-vllm (imports nothing heavy): the ``omni vllm-kv`` command."""

from __future__ import annotations

from omni_core import CliCommand, hookimpl


@hookimpl
def omni_register_cli_commands() -> list[CliCommand]:
    return [CliCommand("vllm-kv", "check a vLLM --kv-transfer-config for OmniKVConnector", "omni_vllm.cli:main")]
