"""Failures on real sockets and processes: coordinator restart, replica killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from coord_helpers import TIMEOUT, addrs, eventually

from omni_coordinator import ReplicaStatus

REPLICA_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from omni_coordinator import OmniCoordClientForStage
    client = OmniCoordClientForStage(sys.argv[1], sys.argv[2], sys.argv[2] + "/out", 0)
    print("registered", flush=True)
    time.sleep(600)
    """
)


def test_restarted_coordinator_recovers_every_replica_and_hub(make_coordinator, make_stage, make_hub) -> None:
    first = make_coordinator()
    router, pub = first.router_zmq_addr, first.pub_zmq_addr
    stages = [make_stage(router, port, stage_id=i) for i, port in enumerate((7000, 7010, 7020))]
    hubs = [make_hub(pub) for _ in range(2)]
    expected = {"tcp://127.0.0.1:7000", "tcp://127.0.0.1:7010", "tcp://127.0.0.1:7020"}
    for hub in hubs:
        eventually(lambda hub=hub: addrs(hub.get_replica_list()) == expected, 5.0, "all replicas before restart")
    stages[2].update_info(status=ReplicaStatus.ERROR, queue_length=4)

    first.close()
    second = make_coordinator(router, pub)  # same endpoints, empty registry, new epoch
    assert second.epoch != first.epoch

    for hub in hubs:
        eventually(lambda hub=hub: hub.get_replica_list().epoch == second.epoch
                   and addrs(hub.get_replica_list()) == expected - {"tcp://127.0.0.1:7020"},
                   TIMEOUT + 5.0, "live replicas re-registered by their heartbeats, seen by every hub")
        assert hub.stats()["coordinator_restarts"] == 1
    eventually(lambda: all(s.coordinator_epoch == second.epoch for s in stages), 5.0, "stages saw the new epoch")
    assert second._replicas["tcp://127.0.0.1:7020"].status is ReplicaStatus.ERROR  # its own status survived
    stages[2].update_info(status=ReplicaStatus.UP)
    stages[0].update_info(queue_length=9)
    for hub in hubs:
        eventually(lambda hub=hub: {(r.input_addr, r.queue_length) for r in hub.get_replica_list().replicas}
                   == {("tcp://127.0.0.1:7000", 9), ("tcp://127.0.0.1:7010", 0), ("tcp://127.0.0.1:7020", 4)},
                   5.0, "updates flow after the restart")


def test_killed_replica_leaves_the_list_within_timeout(coordinator, make_stage, make_hub) -> None:
    hub = make_hub(coordinator.pub_zmq_addr)
    make_stage(coordinator.router_zmq_addr, 7000)
    replica = subprocess.Popen([sys.executable, "-c", REPLICA_SCRIPT, coordinator.router_zmq_addr, "tcp://doomed:1"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert replica.stdout is not None and replica.stdout.readline().strip() == "registered"
        eventually(lambda: "tcp://doomed:1" in addrs(hub.get_replica_list()), 5.0, "replica process registered")
        os.kill(replica.pid, signal.SIGKILL)
        replica.wait(timeout=10)
        # timeout + one check interval (0.1 s) + one publication, with a generous margin for a loaded machine
        eventually(lambda: addrs(hub.get_replica_list()) == {"tcp://127.0.0.1:7000"}, TIMEOUT + 0.1 + 2.0,
                   "killed replica gone, live one kept")
    finally:
        if replica.poll() is None:
            replica.kill()
            replica.wait(timeout=10)
