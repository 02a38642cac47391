"""Test hosts (network namespaces) and ``host: auto``: one test per address rule, each on a fresh host."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from omni_core.hosts import resolve_host
from omni_core.testing.hosts import NETNS_DIR, NamespaceHosts, TestHost, listening_ports

SERVE = textwrap.dedent(
    """
    import socket, sys
    server = socket.create_server((sys.argv[1], 0))
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        conn.sendall(b"hi")
        conn.close()
    """
)
RESOLVE = "import json; from omni_core.hosts import resolve_host; print(json.dumps(resolve_host('auto')))"


def _leftovers(tag: str) -> list[str]:
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    return [n for n in names if tag in n] + [n for n in os.listdir("/sys/class/net") if tag in n]


@pytest.fixture
def three_hosts():
    with NamespaceHosts.for_test(3) as net:
        yield net


@pytest.fixture
def one_host():
    with NamespaceHosts.for_test(1) as net:
        yield net.host(1)


def _resolve(host: TestHost, env: dict[str, str] | None = None) -> tuple[str, str]:
    """(what ``resolve_host('auto')`` says on ``host``, its stderr)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMNI_HOST_IP", "OMNI_HOST_IFNAME")}
    result = subprocess.run(
        [*host.exec_prefix, sys.executable, "-c", RESOLVE], capture_output=True, text=True, env={**clean, **(env or {})}
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def _add_dummy(host: TestHost, name: str, last_octet: int, *, up: bool = True) -> str:
    """A second interface on ``host``, in another /24 of the range (a veth pair inside the namespace, gone with it)."""
    address = f"198.19.{host.hosts.subnet.network_address.packed[2]}.{last_octet}"
    ip = ["ip", "-n", host.netns]
    subprocess.run([*ip, "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True)
    subprocess.run([*ip, "addr", "add", f"{address}/24", "dev", name], check=True)
    subprocess.run([*ip, "link", "set", f"{name}p", "up"], check=True)
    if up:
        subprocess.run([*ip, "link", "set", name, "up"], check=True)
    return address


class TestNamespaceHosts:
    def test_hosts_reach_each_other_and_a_partition_cuts_one_off_until_healed(self, three_hosts):
        h1, h2, h3 = three_hosts.hosts
        assert [h.address for h in three_hosts.hosts] == [str(three_hosts.subnet[i]) for i in (1, 2, 3)]
        server = h1.popen([sys.executable, "-c", SERVE, h1.address], stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline())
        assert h2.connects(h1.address, port) and h3.connects(h1.address, port)
        with h1.partitioned():
            assert not h2.connects(h1.address, port, timeout=1.0)
        assert h2.connects(h1.address, port, timeout=5.0)
        assert not h3.connects("127.0.0.1", port)  # each host has its own loopback
        assert h2.reachable(h1.address, [port, port + 1 if port < 65535 else port - 1]) == {port}

    def test_listening_ports_are_read_in_the_processes_own_namespace(self, three_hosts):
        h1 = three_hosts.host(1)
        code = (
            "import socket, sys, time\n"
            "a = socket.create_server((sys.argv[1], 0)); b = socket.create_server(('::', 0), family=socket.AF_INET6)\n"
            "print(a.getsockname()[1], b.getsockname()[1], flush=True); time.sleep(600)\n"
        )
        server = h1.popen([sys.executable, "-c", code, h1.address], stdout=subprocess.PIPE, text=True)
        on_address, everywhere = (int(p) for p in server.stdout.readline().split())
        assert listening_ports(server.pid) == {on_address: {h1.address}, everywhere: {"::"}}
        assert not set(listening_ports(os.getpid())) & {on_address, everywhere}  # not this namespace's

    def test_every_host_has_one_interface_and_no_default_route(self, three_hosts):
        h2 = three_hosts.host(2)
        links = h2.run(["ip", "-o", "link", "show"]).stdout
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()) == ["eth0", "lo"]
        assert "default" not in h2.run(["ip", "route", "show"]).stdout
        assert three_hosts.gateway.endswith(".254")
        with pytest.raises(IndexError, match=r"hosts 1\.\.3"):
            three_hosts.host(4)

    def test_two_runs_at_once_get_distinct_names_and_subnets(self, three_hosts):
        with NamespaceHosts(1) as other:
            assert other.tag != three_hosts.tag and other.subnet != three_hosts.subnet
            assert other.subnet.subnet_of(three_hosts.subnet.supernet(new_prefix=15))

    def test_close_stops_processes_and_removes_everything(self):
        net = NamespaceHosts.for_test(2)
        sleeper = net.host(2).popen([sys.executable, "-c", "import time; time.sleep(600)"])
        # a process the test did not start (a daemon that double-forked) is stopped too
        daemon = subprocess.Popen([*net.host(1).exec_prefix, "sleep", "600"], start_new_session=True)
        net.close()
        assert sleeper.poll() is not None and daemon.wait(timeout=5) is not None
        assert _leftovers(net.tag) == []
        net.close()  # idempotent

    @pytest.mark.parametrize("ending", ["exit", "sigint", "sigkill"])
    def test_a_run_that_ends_without_closing_leaves_nothing(self, ending):
        NamespaceHosts.for_test(1).close()  # skip/fail without root before starting the child
        code = (
            "import sys, time; from omni_core.testing.hosts import NamespaceHosts\n"
            "net = NamespaceHosts(2); print(net.tag, flush=True)\n"
            "time.sleep(0 if sys.argv[1] == 'exit' else 600)\n"
        )
        child = subprocess.Popen([sys.executable, "-c", code, ending], stdout=subprocess.PIPE, text=True)
        tag = child.stdout.readline().strip()
        assert _leftovers(tag)
        if ending != "exit":
            child.send_signal(signal.SIGINT if ending == "sigint" else signal.SIGKILL)
        child.wait(timeout=30)
        if ending == "sigkill":  # nothing ran in the child: the next run sweeps what it left
            NamespaceHosts(1).close()
        assert _leftovers(tag) == []

    def test_bandwidth_limit_is_set_on_both_ends_and_cleared(self, three_hosts):
        h1 = three_hosts.host(1)
        h1.limit_bandwidth("1gbit")
        inside = h1.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout
        outside = subprocess.run(["tc", "qdisc", "show", "dev", h1.veth], capture_output=True, text=True).stdout
        assert "tbf" in inside and "rate 1Gbit" in inside and "tbf" in outside
        h1.clear_bandwidth_limit()
        assert "tbf" not in h1.run(["tc", "qdisc", "show", "dev", "eth0"]).stdout


class TestHostAuto:
    """``host: auto`` rules, each on a host whose interfaces the test shapes."""

    def test_an_explicit_host_is_kept(self):
        assert resolve_host("198.18.7.7") == "198.18.7.7"

    def test_omni_host_ip_wins(self, one_host):
        assert _resolve(one_host, {"OMNI_HOST_IP": "198.18.9.9"})[0] == "198.18.9.9"

    def test_omni_host_ip_that_is_not_an_address_is_named(self, one_host):
        result = subprocess.run(
            [*one_host.exec_prefix, sys.executable, "-c", RESOLVE],
            capture_output=True, text=True, env={**os.environ, "OMNI_HOST_IP": "not-an-ip"},
        )
        assert result.returncode != 0 and "OMNI_HOST_IP='not-an-ip' is not an IP address" in result.stderr

    def test_omni_host_ifname_picks_that_interface(self, one_host):
        second = _add_dummy(one_host, "data0", 5)
        assert _resolve(one_host, {"OMNI_HOST_IFNAME": "data0"})[0] == second
        assert _resolve(one_host, {"OMNI_HOST_IFNAME": "nomatch,data"})[0] == second  # names or prefixes, in order

    def test_omni_host_ifname_matching_nothing_lists_what_is_up(self, one_host):
        result = subprocess.run(
            [*one_host.exec_prefix, sys.executable, "-c", RESOLVE],
            capture_output=True, text=True, env={**os.environ, "OMNI_HOST_IFNAME": "ib0"},
        )
        assert result.returncode != 0
        assert "OMNI_HOST_IFNAME='ib0' matches no interface that is up" in result.stderr
        assert f"eth0 ({one_host.address})" in result.stderr

    def test_the_default_routes_interface_comes_first(self, one_host):
        second = _add_dummy(one_host, "uplink", 6)
        subprocess.run(["ip", "-n", one_host.netns, "route", "add", "default", "dev", "uplink"], check=True)
        assert _resolve(one_host)[0] == second  # not eth0, although eth0 comes first

    def test_without_a_default_route_the_first_interface_that_is_up(self, one_host):
        assert _resolve(one_host) == (one_host.address, "")
        _add_dummy(one_host, "spare0", 7, up=False)
        subprocess.run(["ip", "-n", one_host.netns, "link", "set", "eth0", "down"], check=True)
        subprocess.run(["ip", "-n", one_host.netns, "link", "set", "spare0", "up"], check=True)
        assert _resolve(one_host)[0].endswith(".7")  # eth0 is down: skipped

    def test_only_loopback_warns_once_naming_the_variables(self, one_host):
        subprocess.run(["ip", "-n", one_host.netns, "link", "set", "eth0", "down"], check=True)
        code = (
            "import logging; logging.basicConfig(); from omni_core.hosts import resolve_host\n"
            "print(resolve_host('auto'), resolve_host(None), resolve_host('0.0.0.0'))"
        )
        result = subprocess.run([*one_host.exec_prefix, sys.executable, "-c", code], capture_output=True, text=True)
        assert result.stdout.split() == ["127.0.0.1"] * 3
        assert result.stderr.count("WARNING") == 1
        assert "OMNI_HOST_IP" in result.stderr and "OMNI_HOST_IFNAME" in result.stderr
