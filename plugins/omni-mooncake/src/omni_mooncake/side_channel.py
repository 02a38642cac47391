"""The ZMQ side channel: a sender's ROUTER listener and a receiver's DEALER client."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from . import wire

logger = logging.getLogger("omni.mooncake.te")

#: Threads running pulls (each blocks in a TransferEngine write with the GIL released).
PULL_WORKERS = 4
#: While a pull is awaited, its sender is probed this often ...
PROBE_INTERVAL_S = 1.0
#: ... and given up when it leaves a probe unanswered this long.
PROBE_TIMEOUT_S = 1.0
#: ZMQ drops a peer that sends a bigger message before buffering it (smaller malformed ones are answered).
MAX_INBOUND_BYTES = 2 * wire.MAX_MESSAGE_BYTES
#: A socket abandoned with a ``done`` note in it keeps trying to deliver the note this long.
NOTE_LINGER_MS = 200
#: A peer that has not finished the ZMTP handshake after this long (silent, garbage) is dropped and counted.
HANDSHAKE_TIMEOUT_MS = 5000
#: Monitor events of peers that do not speak ZMTP (or do not finish its handshake).
_HANDSHAKE_FAILURES = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


#: On close, claimed reads still running are waited for (their receivers' ``done``) this long at most.
CLOSE_GRACE_S = 2.0


class SideChannelServer:
    """A ROUTER socket on ``host:port`` (0 = any free port) answering requests from its own thread.

    Queries and claims are answered inline by ``on_query`` / ``on_claim``, ``done`` notes are passed to
    ``on_done`` (no answer); pulls run on a thread pool through ``on_pull(request, received_at)``.
    ``on_tick`` runs about every ``tick_s`` seconds.  Malformed messages are answered with an error and
    counted by ``on_malformed``; peers that fail the ZMTP handshake, or do not finish it within
    HANDSHAKE_TIMEOUT_MS, are dropped and counted by ``on_refused``, and ZMQ disconnects one sending more
    than MAX_INBOUND_BYTES at once.  Nothing a peer sends stops the listener.  ``claims_open()`` says
    whether receivers are still reading: ``close`` waits for them up to CLOSE_GRACE_S.
    """

    def __init__(
        self,
        ctx: zmq.Context,
        host: str,
        port: int,
        *,
        on_query: Callable[[wire.Query], dict[str, Any]],
        on_pull: Callable[[wire.Pull, float], dict[str, Any]],
        on_claim: Callable[[wire.Claim], dict[str, Any]],
        on_done: Callable[[wire.Done], None],
        claims_open: Callable[[], bool],
        on_tick: Callable[[], None],
        on_malformed: Callable[[], None],
        on_refused: Callable[[], None],
        tick_s: float,
    ) -> None:
        self._on_query, self._on_pull, self._on_tick, self._on_malformed = on_query, on_pull, on_tick, on_malformed
        self._on_claim, self._on_done, self._claims_open = on_claim, on_done, claims_open
        self._on_refused = on_refused
        self._tick_s = tick_s
        self._socket = ctx.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_INBOUND_BYTES)
        self._socket.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_TIMEOUT_MS)
        try:
            if port == 0:
                self.port = self._socket.bind_to_random_port(f"tcp://{host}")
            else:
                self._socket.bind(f"tcp://{host}:{port}")
                self.port = port
        except zmq.ZMQError as exc:
            self._socket.close()
            raise RuntimeError(f"cannot bind the side channel to tcp://{host}:{port}: {exc}") from exc
        self._monitor = self._socket.get_monitor_socket(_HANDSHAKE_FAILURES)
        self._replies: queue.SimpleQueue[tuple[bytes, bytes]] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self._pulls = ThreadPoolExecutor(PULL_WORKERS, thread_name_prefix=f"mooncake-te-pull-{self.port}")
        self._closing = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mooncake-te-listener-{self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Refuse new requests, let running pulls finish and answer them, wait a little for claimed reads, stop."""
        self._closing.set()
        self._pulls.shutdown(wait=True)
        give_up = time.monotonic() + CLOSE_GRACE_S
        while self._claims_open() and time.monotonic() < give_up:
            time.sleep(0.01)
        self._stopped.set()
        self._wake()
        self._thread.join(10)
        if not self._thread.is_alive():
            self._socket.disable_monitor()
            self._monitor.close()
            self._socket.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    # -- listener thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake_read, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        next_tick = time.monotonic() + self._tick_s
        while not self._stopped.is_set():
            try:
                ready = dict(poller.poll(max(1, int((next_tick - time.monotonic()) * 1000))))
                if self._socket in ready:
                    self._receive_all()
                if self._wake_read in ready:
                    self._drain_wake()
                if self._monitor in ready:
                    self._count_refused()
                self._send_replies()
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + self._tick_s
                    self._on_tick()
            except zmq.ContextTerminated:
                return
            except Exception:  # the listener must outlive any bug in a handler
                logger.exception("Mooncake TE side channel on port %d: listener error", self.port)

    def _receive_all(self) -> None:
        while True:
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle(frames)

    def _count_refused(self) -> None:
        while True:
            try:
                recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_refused()

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 3 or frames[1] != b"":
            self._on_malformed()
            if len(frames) >= 2:
                self._reply(frames[0], wire.error_reply(wire.MALFORMED, f"expected one frame, got {len(frames) - 1}"))
            return
        identity, payload = frames[0], frames[2]
        try:
            request = wire.decode_request(payload)
        except wire.MalformedMessage as exc:
            self._on_malformed()
            self._reply(identity, wire.error_reply(wire.MALFORMED, str(exc)))
            return
        if isinstance(request, wire.Done):  # also while closing: it ends a read close() waits for
            self._on_done(request)
        elif self._closing.is_set():
            self._reply(identity, wire.error_reply(wire.CLOSING, "the sender is closing"))
        elif isinstance(request, wire.Query):
            self._reply(identity, self._on_query(request))
        elif isinstance(request, wire.Claim):
            self._reply(identity, self._on_claim(request))
        else:
            try:
                future = self._pulls.submit(self._on_pull, request, time.monotonic())
            except RuntimeError:  # close() shut the pool down since the check above
                self._reply(identity, wire.error_reply(wire.CLOSING, "the sender is closing"))
                return
            future.add_done_callback(lambda done, who=identity: self._post(who, done))

    def _post(self, identity: bytes, done: Future[dict[str, Any]]) -> None:
        """Worker side: queue the reply and wake the listener (sockets are touched by the listener only)."""
        error = done.exception()
        if error is not None:
            logger.error("Mooncake TE side channel on port %d: pull failed: %r", self.port, error)
        reply = wire.error_reply(wire.INTERNAL, repr(error)) if error is not None else done.result()
        self._replies.put((identity, wire.encode_reply(reply)))
        self._wake()

    def _reply(self, identity: bytes, reply: dict[str, Any]) -> None:
        self._replies.put((identity, wire.encode_reply(reply)))

    def _send_replies(self) -> None:
        while True:
            try:
                identity, body = self._replies.get_nowait()
            except queue.Empty:
                return
            try:
                self._socket.send_multipart([identity, b"", body], zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # the peer is gone or its queue is full: it will time out
                logger.debug("side channel reply dropped: %s", exc)

    def _wake(self) -> None:
        try:
            os.write(self._wake_write, b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending, or the pipe is closed during shutdown

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass


class SideChannelError(RuntimeError):
    """A request to a sender could not be sent or answered in time (``timed_out`` tells which)."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class SenderSilent(SideChannelError):
    """The sender left a probe unanswered while a request waited: dead, frozen or cut off by a partition.

    ``socket``, when the reply is still awaited, is now the caller's (close it): when the sender was only cut
    off, its reply comes once the network heals.
    """

    def __init__(self, message: str, socket: zmq.Socket | None) -> None:
        super().__init__(message, timed_out=False)
        self.socket = socket


class SideChannelClient:
    """DEALER sockets to senders, one per (thread, endpoint), each with at most one answer outstanding.

    A socket whose request failed or timed out is replaced (a late answer dies with it).  ``done`` notes
    expect no answer.
    """

    def __init__(self, ctx: zmq.Context) -> None:
        self._ctx = ctx
        self._local = threading.local()
        self._sockets: list[zmq.Socket] = []
        self._lock = threading.Lock()

    def request(
        self, endpoint: tuple[str, int], request: wire.Request, timeout_s: float, *, probe: bool = False
    ) -> dict[str, Any]:
        """Send ``request`` to the sender at ``endpoint`` and return its reply (see :meth:`wait`)."""
        return self.wait(endpoint, self.send(endpoint, request, timeout_s), request.key, timeout_s, probe=probe)

    def send(self, endpoint: tuple[str, int], request: wire.Request, timeout_s: float) -> zmq.Socket:
        """Send ``request`` without waiting for its answer; returns the socket to :meth:`wait` on."""
        sock = self._socket(endpoint)
        try:
            sock.setsockopt(zmq.SNDTIMEO, _ms(timeout_s))
            sock.send_multipart([b"", wire.encode_request(request)])
        except zmq.Again:
            problem = f"could not send within {timeout_s:.1f} s"
        except zmq.ZMQError as exc:
            problem = str(exc)
        else:
            return sock
        self._evict(endpoint, sock)
        raise SideChannelError(f"side channel to {_url(endpoint)}: {problem}", timed_out=True)

    def wait(
        self, endpoint: tuple[str, int], sock: zmq.Socket, key: str, timeout_s: float, *, probe: bool = False
    ) -> dict[str, Any]:
        """The answer to the request just sent on ``sock``, within ``timeout_s``.

        With ``probe`` the sender is probed (:meth:`prober`) while the answer is awaited: one that answers
        keeps the whole ``timeout_s`` (a pull it is running finishes), one that leaves a probe unanswered
        (dead, frozen, cut off by a partition) is given up at once (:class:`SenderSilent`, which hands over
        the socket), so a silent sender is noticed within PROBE_INTERVAL_S + PROBE_TIMEOUT_S.
        """
        started = time.monotonic()
        end = started + timeout_s
        prober = self.prober(endpoint, key, started) if probe else None
        try:
            while True:
                wake = end if prober is None else min(end, prober.next_check)
                if sock.poll(_ms(wake - time.monotonic()), zmq.POLLIN):
                    return read_answer(sock)
                if time.monotonic() >= end:
                    problem, timed_out = f"no answer within {timeout_s:.1f} s", True
                    break
                if prober is not None and not prober.check():
                    self._detach(endpoint, sock)
                    problem = f"the sender did not answer a probe within {PROBE_TIMEOUT_S:g} s"
                    raise SenderSilent(f"side channel to {_url(endpoint)}: {problem}", sock)
        except (wire.MalformedMessage, zmq.ZMQError) as exc:
            problem, timed_out = str(exc), False
        finally:
            if prober is not None:
                prober.close()
        self._evict(endpoint, sock)
        raise SideChannelError(f"side channel to {_url(endpoint)}: {problem}", timed_out=timed_out)

    def prober(self, endpoint: tuple[str, int], key: str, started: float | None = None) -> Prober:
        """Probes of the sender at ``endpoint`` from ``started`` on (now by default); close it when done."""
        return Prober(self._ctx, endpoint, key, time.monotonic() if started is None else started)

    def notify(self, endpoint: tuple[str, int], note: wire.Done, *, abandon: zmq.Socket | None = None) -> None:
        """Send ``note`` (no answer comes); ``abandon`` a socket whose answer is still outstanding instead.

        An abandoned socket is closed after a short linger (so the note still leaves) and replaced.
        """
        sock = abandon if abandon is not None else self._socket(endpoint)
        try:
            sock.send_multipart([b"", wire.encode_request(note)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer's queue is full or it is gone: its claim then lapses
            logger.debug("side channel note to %s dropped: %s", _url(endpoint), exc)
        if abandon is not None:
            self._evict(endpoint, abandon, linger_ms=NOTE_LINGER_MS)

    def _socket(self, endpoint: tuple[str, int]) -> zmq.Socket:
        cache: dict[tuple[str, int], zmq.Socket] = self._local.__dict__.setdefault("sockets", {})
        sock = cache.get(endpoint)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(_url(endpoint))
            cache[endpoint] = sock
            with self._lock:
                self._sockets.append(sock)
        return sock

    def _evict(self, endpoint: tuple[str, int], sock: zmq.Socket, linger_ms: int = 0) -> None:
        """A socket whose request failed may get a late answer: close it; the next call opens a new one."""
        self._detach(endpoint, sock)
        sock.close(linger=linger_ms)

    def _detach(self, endpoint: tuple[str, int], sock: zmq.Socket) -> None:
        """Stop using ``sock`` for ``endpoint`` (the next call opens a new one)."""
        self._local.__dict__.get("sockets", {}).pop(endpoint, None)
        with self._lock:
            if sock in self._sockets:
                self._sockets.remove(sock)

    def close(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close(linger=0)


class Prober:
    """Probes of one sender while a request waits: a query on a socket of its own every PROBE_INTERVAL_S."""

    def __init__(self, ctx: zmq.Context, endpoint: tuple[str, int], key: str, started: float) -> None:
        self._ctx, self._endpoint, self._key = ctx, endpoint, key
        self._socket: zmq.Socket | None = None
        self._sent_at = 0.0
        #: When :meth:`check` next has something to do (send a probe, or give one up).
        self.next_check = started + PROBE_INTERVAL_S

    def check(self) -> bool:
        """Advance the probing; False once a probe went unanswered for PROBE_TIMEOUT_S."""
        now = time.monotonic()
        if self._socket is not None:
            if not self._socket.poll(0, zmq.POLLIN):
                return now < self._sent_at + PROBE_TIMEOUT_S
            self.close()  # any answer will do
            self.next_check = self._sent_at + PROBE_INTERVAL_S
        if now >= self.next_check:
            self._socket = self._ctx.socket(zmq.REQ)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(_url(self._endpoint))
            self._socket.send(wire.encode_request(wire.Query(self._key)))
            self._sent_at = now
            self.next_check = now + PROBE_TIMEOUT_S
        return True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None


def read_answer(sock: zmq.Socket) -> dict[str, Any]:
    """Decode the answer waiting on a DEALER ``sock`` (an empty delimiter frame, then the reply)."""
    frames = sock.recv_multipart(zmq.NOBLOCK)
    if len(frames) != 2 or frames[0] != b"":
        raise wire.MalformedMessage(f"answer of {len(frames)} frames")
    return wire.decode_reply(frames[1])


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _url(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
