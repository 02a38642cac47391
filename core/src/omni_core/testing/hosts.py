"""Test hosts on one machine: Linux network namespaces on a bridge, in 198.18.0.0/15.

Each host is a namespace with its own loopback and one interface (``eth0``) on a private
/24 and no default route, like a cluster's private network::

    from omni_core.testing.hosts import NamespaceHosts

    @pytest.fixture(scope="module")
    def hosts():
        with NamespaceHosts.for_test(3) as net:   # skips without root; fails under CI=true
            yield net

    def test_across_hosts(hosts):
        server = hosts.host(1).popen([...])          # a process on host 1 (198.18.N.1)
        child = hosts.host(2).child_connector(spec)  # a connector in a process on host 2
        assert hosts.host(3).connects(hosts.host(1).address, port)  # what another host can reach
        with hosts.host(1).partitioned():            # host 1 cut off, healed on exit
            ...

Names carry the creating process's PID, so two runs never collide; whatever a dead run
left behind is removed by the next one.  ``close()`` (also at interpreter exit) stops every
process left in the namespaces and removes namespaces, links and the bridge.  Needs root
and iproute2 (``ip``, ``tc``).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from omni_core.remote import ChildConnector

if TYPE_CHECKING:
    from typing_extensions import Self

    from omni_core.spec import ConnectorSpec

#: The benchmarking range RFC 2544 reserves; test hosts use a free /24 inside it.
TEST_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
BRIDGE_HOST = 254
NETNS_DIR = "/run/netns"
_PREFIX = "omni-"
_counter = itertools.count()
_live: set[str] = set()
_lock = threading.Lock()


def can_make_hosts() -> tuple[bool, str]:
    """(True, "") when this process can make test hosts, else (False, why)."""
    if sys.platform != "linux":
        return False, "test hosts need Linux network namespaces"
    if os.geteuid() != 0:
        return False, "test hosts need root (network namespaces, veth, bridge)"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        return False, f"test hosts need iproute2: {', '.join(missing)} not found"
    return True, ""


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_processes(netns: str) -> list[int]:
    """PIDs of the processes inside namespace ``netns``."""
    try:
        inode = os.stat(f"{NETNS_DIR}/{netns}").st_ino
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino == inode:
                    pids.append(int(entry))
    return pids


def _stop_processes(netns: str, grace: float) -> None:
    """SIGTERM every process in ``netns``, SIGKILL what is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _netns_processes(netns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _pid_alive(pid) and pid in _netns_processes(netns)]
            if pids:
                time.sleep(0.05)
        if not pids:
            return


def _tag_owner(tag: str) -> int | None:
    """The PID a tag (6 hex digits of PID + 2 of a counter) was made by, or None if it is not ours."""
    if len(tag) != 8:
        return None
    try:
        return int(tag[:6], 16)
    except ValueError:
        return None


def _remove(tag: str) -> None:
    """Remove everything made under ``tag``: processes, namespaces, veths, bridge."""
    netns_names = sorted(
        n for n in (os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []) if n.startswith(f"{_PREFIX}{tag}-")
    )
    for name in netns_names:
        _stop_processes(name, grace=2.0)
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", name)
    for link in os.listdir("/sys/class/net"):
        if link.startswith((f"omv{tag}", f"omb{tag}")):
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", link)


def sweep_stale() -> list[str]:
    """Remove test hosts left by runs whose process is gone; return their tags."""
    tags = set()
    for name in os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []:
        if name.startswith(_PREFIX):
            tags.add(name[len(_PREFIX):].split("-")[0])
    for link in os.listdir("/sys/class/net"):
        if link.startswith("omb"):
            tags.add(link[3:])
    stale = []
    for tag in sorted(tags):
        owner = _tag_owner(tag)
        if owner is None:
            continue
        if not _pid_alive(owner) or (owner == os.getpid() and tag not in _live):
            _remove(tag)
            stale.append(tag)
    return stale


def listening_ports(pid: int) -> dict[int, set[str]]:
    """The TCP ports process ``pid`` listens on, each with the addresses it is bound to (``0.0.0.0`` / ``::``:
    every interface), as seen in the process's own network namespace."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found: dict[int, set[str]] = {}
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        with open(f"/proc/{pid}/net/{table}") as lines:
            for line in itertools.islice(lines, 1, None):
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                    continue
                address, port = fields[1].rsplit(":", 1)
                raw = bytes.fromhex(address)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is host-order
                host = socket.inet_ntop(family, raw).removeprefix("::ffff:")  # IPv4-mapped: the IPv4 address
                found.setdefault(int(port, 16), set()).add(host)
    return found


def _used_subnets() -> set[ipaddress.IPv4Network]:
    import psutil

    used = set()
    for addresses in psutil.net_if_addrs().values():
        for addr in addresses:
            with contextlib.suppress(ValueError):
                ip = ipaddress.ip_address(addr.address)
                if ip.version == 4 and ip in TEST_RANGE:
                    used.add(ipaddress.IPv4Network(f"{ip}/24", strict=False))
    return used


class TestHost:
    """One test host: a network namespace with address ``address`` on interface ``eth0``."""

    __test__ = False  # not a pytest test class

    def __init__(self, hosts: NamespaceHosts, index: int, netns: str, address: str, veth: str) -> None:
        self.hosts = hosts
        self.index = index
        self.netns = netns
        self.address = address
        self.veth = veth  # the link's end outside the namespace, on the bridge
        self.exec_prefix: list[str] = ["ip", "netns", "exec", netns]

    def __repr__(self) -> str:
        return f"TestHost({self.index}, {self.netns}, {self.address})"

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` on this host; it is stopped (if still running) when the hosts are closed."""
        proc = subprocess.Popen([*self.exec_prefix, *argv], **kwargs)
        self.hosts._processes.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on this host to completion; its output is captured as text."""
        return subprocess.run(
            [*self.exec_prefix, *argv], capture_output=True, text=True, timeout=timeout, check=check
        )

    def python(self, code: str, *, env: dict[str, str] | None = None, timeout: float = 60.0) -> str:
        """Run ``code`` with this interpreter on this host; its stripped stdout (CalledProcessError if it fails)."""
        result = subprocess.run(
            [*self.exec_prefix, sys.executable, "-c", code],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
        )
        if result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return result.stdout.strip()

    def child_connector(
        self, spec: ConnectorSpec, *, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> ChildConnector:
        """A connector built from ``spec`` in a child process on this host (close it when done); ``env`` is
        added to the child's environment."""
        launcher = [*self.exec_prefix, sys.executable, "-m", "omni_core.remote"]
        child = ChildConnector(spec, timeout=timeout, launcher=launcher, env=env)
        self.hosts._processes.append(child.proc)
        return child

    def connects(self, address: str, port: int, timeout: float = 1.0) -> bool:
        """Whether a TCP connection from this host to ``address:port`` opens within ``timeout`` seconds."""
        return port in self.reachable(address, [port], timeout)

    def reachable(self, address: str, ports: Sequence[int], timeout: float = 1.0) -> set[int]:
        """The ``ports`` of ``address`` that accept a TCP connection from this host (each tried for ``timeout`` s)."""
        code = (
            "import socket, sys\n"
            "for port in sys.argv[3:]:\n"
            "    try:\n"
            "        socket.create_connection((sys.argv[1], int(port)), float(sys.argv[2])).close(); print(port)\n"
            "    except OSError:\n"
            "        pass\n"
        )
        argv = [sys.executable, "-c", code, address, str(timeout), *(str(p) for p in ports)]
        result = self.run(argv, timeout=timeout * len(ports) + 30)
        return {int(line) for line in result.stdout.split()}

    def partition(self) -> None:
        """Cut this host off the network (its link goes down; packets to and from it are lost)."""
        _ip("link", "set", self.veth, "down")

    def heal(self) -> None:
        """Reconnect this host after :meth:`partition`."""
        _ip("link", "set", self.veth, "up")

    @contextlib.contextmanager
    def partitioned(self) -> Iterator[TestHost]:
        """This host cut off for the duration of the block, healed on exit (also on error)."""
        self.partition()
        try:
            yield self
        finally:
            self.heal()

    def limit_bandwidth(self, rate: str = "1gbit", *, burst: str = "256kb", latency: str = "50ms") -> None:
        """Limit this host's link to ``rate`` in both directions (``tc`` token bucket filter)."""
        for prefix, dev in ((["ip", "netns", "exec", self.netns], "eth0"), ([], self.veth)):
            subprocess.run(
                [*prefix, "tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                 "rate", rate, "burst", burst, "latency", latency],
                check=True, capture_output=True,
            )

    def clear_bandwidth_limit(self) -> None:
        """Remove :meth:`limit_bandwidth`'s limit."""
        for prefix, dev in ((["ip", "netns", "exec", self.netns], "eth0"), ([], self.veth)):
            subprocess.run([*prefix, "tc", "qdisc", "del", "dev", dev, "root"], capture_output=True)


class NamespaceHosts:
    """``count`` test hosts (network namespaces) on one bridge in a free /24 of 198.18.0.0/15.

    Host ``i`` (1-based) has address ``198.18.N.i``; the bridge, in this process's namespace, has ``.254``.
    """

    def __init__(self, count: int = 3) -> None:
        ok, why = can_make_hosts()
        if not ok:
            raise RuntimeError(why)
        if not 1 <= count <= 200:
            raise ValueError(f"count must be 1..200, got {count}")
        sweep_stale()
        self.tag = f"{os.getpid() & 0xFFFFFF:06x}{next(_counter) & 0xFF:02x}"
        self.bridge = f"omb{self.tag}"
        self._processes: list[subprocess.Popen[Any]] = []
        self._closed = False
        with _lock:
            _live.add(self.tag)
        atexit.register(self.close)
        try:
            self.subnet = self._claim_subnet()
            self.hosts = tuple(self._make_host(i) for i in range(1, count + 1))
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_test(cls, count: int = 3) -> NamespaceHosts:
        """Hosts for a test: skips it without root (fails under CI=true, see ``omni_core.testing.require``)."""
        from omni_core.testing import require

        ok, why = can_make_hosts()
        require(ok, why)
        return cls(count)

    @property
    def gateway(self) -> str:
        """The bridge's address: this (the creating) process's namespace, as seen from the hosts."""
        return str(self.subnet[BRIDGE_HOST])

    def host(self, index: int) -> TestHost:
        """Host ``index``, 1-based."""
        if not 1 <= index <= len(self.hosts):
            raise IndexError(f"host {index}: there are hosts 1..{len(self.hosts)}")
        return self.hosts[index - 1]

    def _claim_subnet(self) -> ipaddress.IPv4Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        subnets = list(TEST_RANGE.subnets(new_prefix=24))
        for _ in range(64):
            used = _used_subnets()
            subnet = random.choice([s for s in subnets if s not in used])
            _ip("addr", "add", f"{subnet[BRIDGE_HOST]}/24", "dev", self.bridge)
            if list(self._owners_of(subnet)) == [self.bridge]:
                _ip("link", "set", self.bridge, "up")
                return subnet
            _ip("addr", "del", f"{subnet[BRIDGE_HOST]}/24", "dev", self.bridge)  # another run took it meanwhile
            time.sleep(random.random() * 0.05)
        raise RuntimeError("no free /24 in 198.18.0.0/15 for test hosts")

    @staticmethod
    def _owners_of(subnet: ipaddress.IPv4Network) -> Iterator[str]:
        import psutil

        for name, addresses in psutil.net_if_addrs().items():
            if any(a.family == socket.AF_INET and ipaddress.ip_address(a.address) in subnet for a in addresses):
                yield name

    def _make_host(self, index: int) -> TestHost:
        netns = f"{_PREFIX}{self.tag}-h{index}"
        veth = f"omv{self.tag}{index:x}"
        address = str(self.subnet[index])
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("link", "set", veth, "master", self.bridge)
        _ip("link", "set", veth, "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        return TestHost(self, index, netns, address, veth)

    def close(self) -> None:
        """Stop every process on the hosts, remove namespaces, links and the bridge (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for proc in self._processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._processes:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        _remove(self.tag)
        with _lock:
            _live.discard(self.tag)
        atexit.unregister(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
