"""Conformance kit for connector authors.

Subclass :class:`ConnectorConformanceTests` in a pytest module and provide a
``connector_spec`` fixture::

    from omni_core import ConnectorSpec
    from omni_core.testing import ConnectorConformanceTests

    class TestMyConnector(ConnectorConformanceTests):
        @pytest.fixture
        def connector_spec(self):
            return ConnectorSpec("MyConnector", {"host": "127.0.0.1"})

Connectors are created through ``OmniConnectorFactory``: the plugin must be
installed, registered through an ``omni`` entry point and declare its config
keys.  Connectors with separate producer and consumer roles override
``producer_spec``/``consumer_spec``.  Each test checks what the connector's
declared capabilities promise (delivery semantics, raw data).
:func:`require` skips a test whose backend is missing, and fails it under CI=true.
Kit tests must not be overridden silently: an override must be decorated with
:func:`kit_override` giving the reason (checked by ``test_no_silent_overrides``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from omni_core.base import OmniConnectorBase, resolve_payload
from omni_core.capabilities import Delivery
from omni_core.digest import checksum
from omni_core.errors import ConfigError
from omni_core.factory import OmniConnectorFactory
from omni_core.plugins import get_plugin_registry
from omni_core.registration import import_target
from omni_core.remote import ChildConnector
from omni_core.samples import PAYLOAD_KINDS, TENSOR_KINDS, make_payload
from omni_core.spec import ConnectorSpec

__all__ = [
    "PAYLOAD_KINDS",
    "ChildConnector",
    "ConnectorConformanceTests",
    "assert_package_surface",
    "assert_payload_equal",
    "checksum",
    "eventually",
    "kit_override",
    "make_payload",
    "require",
]

EDGE = ("0", "1")
#: Modules a plugin package must not import when it is imported: they load when a connector is used.
HEAVY_MODULES = ("torch", "numpy", "zmq", "mooncake", "yr", "ray", "vllm", "prometheus_client", "rich")
T = TypeVar("T")


def eventually(probe: Callable[[], T], within: float, what: str, interval: float = 0.02) -> T:
    """Poll ``probe`` until it returns something truthy (returned); fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:.1f}s: {what} (last value: {value!r})")
        time.sleep(interval)


def kit_override(reason: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a deliberate override of a kit test; ``reason`` says why."""

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        func._omni_kit_override = reason  # type: ignore[attr-defined]
        return func

    return mark


def assert_payload_equal(expected: Any, actual: Any) -> None:
    """Assert type-exact equality (tuples stay tuples, tensors keep dtype, shape and bits)."""
    assert checksum(actual) == checksum(expected), f"payload differs: expected {expected!r:.200}, got {actual!r:.200}"


def assert_package_surface(package: str, heavy: tuple[str, ...] = HEAVY_MODULES) -> None:
    """Check a plugin package's top level: ``import package`` loads none of ``heavy``; every name in
    ``__all__`` resolves; every connector its distribution registers is exported there as the registered class.
    """
    code = f"import json, sys, {package}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert sorted(set(loaded) & set(heavy)) == [], f"import {package} loads heavy modules"
    module = importlib.import_module(package)
    unresolved = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert unresolved == [], f"{package}.__all__ names that do not resolve: {unresolved}"
    registry = get_plugin_registry()
    found = (registry.find_connector(name) for name in registry.connector_names())
    mine = {r.name: r for r, _ in filter(None, found) if r.target.startswith(f"{package}.")}
    assert mine, f"no connector registered by {package}"
    for name, registration in mine.items():
        assert getattr(module, name, None) is import_target(registration.target), f"{package}.{name} is not exported"


def require(condition: bool, reason: str) -> None:
    """Skip the calling test when what it needs (a backend, a module, root) is missing; under CI=true fail instead.

    CI never skips to green: there every backend a test needs must be present.
    """
    if condition:
        return
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: everything a test needs must be present)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def metrics_endpoint() -> Iterator[str]:
    """``start_metrics_server`` on a free port of 127.0.0.1 (skipped, or failed under CI=true, without
    prometheus-client): yields its URL; stops it, and the recording of calls, on the way out."""
    require(importlib.util.find_spec("prometheus_client") is not None, "pip install 'omni-core[metrics]'")
    from omni_core.metrics import record_calls, start_metrics_server

    server = start_metrics_server(0)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        record_calls(False)


def scrape_metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``{(sample name, labels): value}`` of the Prometheus text served at ``url``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _needs_torch(kind: str) -> None:
    """Tensor payloads need torch (ndarrays numpy)."""
    if kind in TENSOR_KINDS or kind in ("ndarray", "tensor_in_dict"):
        module = "numpy" if kind == "ndarray" else "torch"
        found = importlib.util.find_spec(module) is not None
        require(found, f"{module} is not installed: {kind} payloads cannot be built")


class ConnectorConformanceTests:
    """Behaviour every connector must show.  Override the fixtures, not the tests."""

    #: Seconds a get may wait for a payload put by another process.
    get_timeout: float = 10.0
    #: The plugin registration the connector is checked against (None: its spec's name).  Set it when the spec
    #: names an in-process wrapper of a registered connector (e.g. one driving a fake engine).
    registration_name: str | None = None

    # -- fixtures to override ---------------------------------------------------
    @pytest.fixture
    def connector_spec(self) -> ConnectorSpec:
        raise NotImplementedError("subclasses provide a connector_spec fixture")

    @pytest.fixture
    def producer_spec(self, connector_spec: ConnectorSpec) -> ConnectorSpec:
        return connector_spec

    @pytest.fixture
    def consumer_spec(self, connector_spec: ConnectorSpec) -> ConnectorSpec:
        return connector_spec

    @pytest.fixture
    def producer(self, producer_spec: ConnectorSpec) -> Iterator[OmniConnectorBase]:
        connector = OmniConnectorFactory.create_connector(producer_spec)
        yield connector
        connector.close()

    @pytest.fixture
    def consumer(
        self, producer: OmniConnectorBase, producer_spec: ConnectorSpec, consumer_spec: ConnectorSpec
    ) -> Iterator[OmniConnectorBase]:
        if consumer_spec == producer_spec:
            yield producer
            return
        connector = OmniConnectorFactory.create_connector(consumer_spec)
        yield connector
        connector.close()

    def unwrap(self, obj: Any) -> Any:
        """Turn what ``get`` returned into the payload (raw-buffer handles are materialized and released)."""
        return resolve_payload(obj)

    def child_connector(self, spec: ConnectorSpec) -> ChildConnector:
        """A connector built from ``spec`` in a child process (override to bootstrap the child differently)."""
        return ChildConnector(spec)

    # -- helpers -----------------------------------------------------------------
    @staticmethod
    def new_key(label: str = "k") -> str:
        return f"{label}-{uuid.uuid4().hex[:12]}"

    def fetch(self, consumer: OmniConnectorBase, key: str, metadata: dict[str, Any] | None) -> tuple[Any, int] | None:
        result = consumer.get_with_deadline(*EDGE, key, metadata, deadline=time.monotonic() + self.get_timeout)
        return None if result is None else (self.unwrap(result[0]), result[1])

    def roundtrip(self, producer: OmniConnectorBase, consumer: OmniConnectorBase, payload: Any) -> tuple[Any, int, int]:
        key = self.new_key()
        ok, size, metadata = producer.put(*EDGE, key, payload)
        assert ok, f"put of {type(payload).__name__} failed"
        result = self.fetch(consumer, key, metadata)
        assert result is not None, f"get of {key!r} returned None"
        return result[0], result[1], size

    # -- the tests -----------------------------------------------------------------
    @pytest.mark.parametrize("kind", PAYLOAD_KINDS)
    def test_roundtrip(self, producer: OmniConnectorBase, consumer: OmniConnectorBase, kind: str) -> None:
        _needs_torch(kind)
        payload = make_payload(kind)
        received, got_size, put_size = self.roundtrip(producer, consumer, payload)
        assert_payload_equal(payload, received)
        assert put_size > 0 and got_size == put_size

    def test_missing_key_returns_none(self, consumer: OmniConnectorBase) -> None:
        assert consumer.get(*EDGE, self.new_key("missing")) is None

    def test_delivery_semantics(self, producer: OmniConnectorBase, consumer: OmniConnectorBase) -> None:
        key = self.new_key()
        ok, _, metadata = producer.put(*EDGE, key, {"x": 1})
        assert ok
        assert self.fetch(consumer, key, metadata) is not None
        second = consumer.get(*EDGE, key, metadata)
        if consumer.capabilities.delivery is Delivery.PERSISTENT:
            assert second is not None and self.unwrap(second[0]) == {"x": 1}
        else:
            assert second is None, "a consume-once or broadcast reader must not read the same key twice"

    def test_cleanup_removes_unconsumed(self, producer: OmniConnectorBase, consumer: OmniConnectorBase) -> None:
        key = self.new_key()
        ok, _, metadata = producer.put(*EDGE, key, b"to be cleaned")
        assert ok
        producer.cleanup(key)
        assert consumer.get(*EDGE, key, metadata) is None

    def test_cleanup_unknown_key_is_noop(self, producer: OmniConnectorBase) -> None:
        producer.cleanup(self.new_key("never-put"))
        assert producer.health()["status"] == "healthy"

    def test_health_shape(self, producer: OmniConnectorBase) -> None:
        ok, _, _ = producer.put(*EDGE, self.new_key(), {"a": 1})
        assert ok
        health = producer.health()
        assert health["status"] == "healthy"
        for name in ("puts", "gets", "errors"):
            assert isinstance(health.get(name), int) and health[name] >= 0, f"health()[{name!r}] must be an int"
        assert health["puts"] >= 1

    def test_close_is_idempotent(self, producer_spec: ConnectorSpec) -> None:
        connector = OmniConnectorFactory.create_connector(producer_spec)
        connector.close()
        connector.close()
        assert connector.closed
        assert connector.health()["status"] == "unhealthy"

    def test_context_manager_closes(self, producer_spec: ConnectorSpec) -> None:
        with OmniConnectorFactory.create_connector(producer_spec) as connector:
            assert connector.health()["status"] == "healthy"
        assert connector.closed

    @pytest.mark.parametrize("bad", ["", "a/b", "nul\x00key", "k" * 1000])
    def test_bad_keys_rejected(self, producer: OmniConnectorBase, bad: str) -> None:
        with pytest.raises(ValueError, match="key"):
            producer.put(*EDGE, bad, b"x")

    def test_unknown_config_key_rejected(self, producer_spec: ConnectorSpec) -> None:
        name = self.registration_name or producer_spec.name
        reg = OmniConnectorFactory.registration(name)
        assert reg is not None and reg.config_keys is not None, (
            f"{name} must be registered through an `omni` entry point and declare its config_keys, "
            "so that a misspelt key is refused when the config is loaded"
        )
        bad = ConnectorSpec(producer_spec.name, {**producer_spec.extra, "no_such_key_xyz": 1})
        with pytest.raises(ConfigError, match="no_such_key_xyz"):
            OmniConnectorFactory.create_connector(bad)

    def test_capabilities_match_registration(self, producer: OmniConnectorBase, producer_spec: ConnectorSpec) -> None:
        name = self.registration_name or producer_spec.name
        reg = OmniConnectorFactory.registration(name)
        assert reg is not None, f"{name} must be registered through an `omni` entry point"
        declared = type(producer).capabilities
        assert declared.raw_data == reg.capabilities.raw_data == producer.supports_raw_data
        assert declared.needs_endpoint == reg.capabilities.needs_endpoint
        assert declared.cross_host == reg.capabilities.cross_host

    def test_get_with_deadline_times_out(self, consumer: OmniConnectorBase) -> None:
        start = time.monotonic()
        assert consumer.get_with_deadline(*EDGE, self.new_key("late"), None, deadline=start + 0.2) is None

    def test_concurrent_threads(self, producer: OmniConnectorBase, consumer: OmniConnectorBase) -> None:
        errors: list[BaseException] = []

        def worker(index: int) -> None:
            try:
                for round_ in range(5):
                    payload = {"worker": index, "round": round_, "blob": bytes([index]) * (1000 + round_)}
                    received, _, _ = self.roundtrip(producer, consumer, payload)
                    assert received == payload
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors[0]

    @pytest.mark.parametrize("kind", ["request_dict", "tensor_in_dict", "tensor_1mib"])
    def test_put_in_child_get_in_parent(
        self, producer_spec: ConnectorSpec, consumer: OmniConnectorBase, kind: str
    ) -> None:
        _needs_torch(kind)
        with self.child_connector(producer_spec) as child:
            keys = [self.new_key(f"child{i}") for i in range(3)]
            puts = [child.call({"op": "put", "from": EDGE[0], "to": EDGE[1], "key": k, "kind": kind}) for k in keys]
            for key, answer in zip(keys, puts, strict=True):
                assert answer["ok"], answer
                result = self.fetch(consumer, key, answer["metadata"])
                assert result is not None, f"{key} put by a child process was not found"
                assert checksum(result[0]) == checksum(make_payload(kind))

    @pytest.mark.parametrize("readers", [2])
    def test_put_in_parent_get_in_children(
        self, producer: OmniConnectorBase, consumer_spec: ConnectorSpec, readers: int
    ) -> None:
        payload = make_payload("request_dict")
        keys = [self.new_key(f"parent{i}") for i in range(4)]
        metas = {}
        for key in keys:
            ok, _, metadata = producer.put(*EDGE, key, payload)
            assert ok
            metas[key] = metadata
        children = [self.child_connector(consumer_spec) for _ in range(readers)]
        try:
            found = []
            for index, key in enumerate(keys):
                child = children[index % readers]
                answer = child.call(
                    {
                        "op": "get",
                        "from": EDGE[0],
                        "to": EDGE[1],
                        "key": key,
                        "metadata": metas[key],
                        "timeout": self.get_timeout,
                    }
                )
                assert answer["found"], f"{key} not found by child {index % readers}"
                found.append(answer["checksum"])
            assert found == [checksum(payload)] * len(keys)
        finally:
            for child in children:
                child.close()

    def test_no_silent_overrides(self) -> None:
        """Kit tests may only be overridden with @kit_override(reason=...)."""
        silent = []
        for name, kit_attr in vars(ConnectorConformanceTests).items():
            if not name.startswith("test_"):
                continue
            actual = getattr(type(self), name)
            if actual is not kit_attr and not getattr(actual, "_omni_kit_override", None):
                silent.append(name)
        assert not silent, f"kit tests overridden without @kit_override(reason=...): {silent}"
