"""The simulated monitor as an MLLP client: ACKs, resends, reconnects, against a real
little listener socket written here (independent of the gateway's listener)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from contracts.mllp import MllpFramer, frame
from firmware_sim.hl7 import parse_oru
from firmware_sim.monitor import Monitor, MonitorRunner
from firmware_sim.physiology import GeneratedSource
from firmware_sim.transports import MllpClientTransport, control_id_of, parse_ack
from tests.support.net import free_port
from tests.support.waiting import wait_until

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def ack(control: str, code: str = "AA", err: str = "") -> bytes:
    segs = [
        f"MSH|^~\\&|VIGIL|GATEWAY|||20260301080000+0000||ACK^R01^ACK|a-{control}|P|2.6",
        f"MSA|{code}|{control}",
    ]
    if err:
        segs.append(f"ERR|||207^Application internal error^HL70357|E||||{err}")
    return frame("\r".join(segs))


class Listener:
    """A TCP MLLP server: records every frame; `policy(control, n)` -> the ACK bytes to
    send for the n-th copy (1-based) of that control id, or b"" for none."""

    def __init__(self, port: int, policy: Callable[[str, int], bytes]) -> None:
        self.port = port
        self.policy = policy
        self.frames: list[bytes] = []
        self.copies: dict[str, int] = {}
        self.connections = 0
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", port))
        self._srv.listen(8)
        self._conns: list[socket.socket] = []
        self._halt = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._halt.is_set():
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        framer = MllpFramer()
        while not self._halt.is_set():
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            for body in framer.feed(data):
                self.frames.append(body)
                control = control_id_of(frame(body)) or ""
                self.copies[control] = self.copies.get(control, 0) + 1
                reply = self.policy(control, self.copies[control])
                if reply:
                    with contextlib.suppress(OSError):
                        conn.sendall(reply)

    def close(self) -> None:
        self._halt.set()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        with contextlib.suppress(OSError):  # wakes the blocked accept() (Linux)
            self._srv.shutdown(socket.SHUT_RDWR)
        self._srv.close()


@pytest.fixture
def port() -> int:
    return free_port()


def _monitor(transport: MllpClientTransport, profile: str = "standard") -> Monitor:
    return Monitor(
        "bed-1",
        GeneratedSource("stable", 1),
        transport,
        clock_start=T0,
        profile=profile,
        max_rate=100,
    )


def _client(port: int, **kw: float) -> MllpClientTransport:
    kw.setdefault("ack_timeout", 0.3)
    kw.setdefault("reconnect_min", 0.05)
    kw.setdefault("reconnect_max", 0.2)
    t = MllpClientTransport("127.0.0.1", port, **kw)  # type: ignore[arg-type]
    assert t.wait_connected(5)
    return t


def test_each_frame_waits_for_its_aa(port: int) -> None:
    srv = Listener(port, lambda c, n: ack(c))
    t = _client(port)
    m = _monitor(t)
    try:
        for n in range(20):
            m.cycle(n)
        assert t.flush(10)
        assert t.stats.acked == 20 and t.stats.resent == 0 and t.stats.lost == 0
        assert m.stats.sent == 20
        seqs = [parse_oru(f).seq for f in srv.frames]
        assert seqs == list(range(1, 21))  # one copy each, in order
        assert all(b"MDC_ECG_HEART_RATE" in f for f in srv.frames)
    finally:
        t.close()
        srv.close()


def test_no_ack_resends_then_counts_lost(port: int) -> None:
    srv = Listener(port, lambda c, n: b"")  # a receiver that never acknowledges
    t = _client(port, retries=3)
    try:
        _monitor(t).cycle(0)
        assert t.flush(10)
        assert srv.copies == {"MON01-1": 4}  # the first send and GE's three retries
        assert t.stats.resent == 3 and t.stats.lost == 1 and t.stats.acked == 0
        assert len(set(srv.frames)) == 1  # the same bytes each time
    finally:
        t.close()
        srv.close()


def test_a_late_ack_after_one_resend_is_enough(port: int) -> None:
    # The first copy gets an ACK for another message (stray), the second its own.
    srv = Listener(port, lambda c, n: ack(c) if n == 2 else ack("someone-else"))
    t = _client(port)
    try:
        _monitor(t).cycle(0)
        assert t.flush(10)
        assert srv.copies == {"MON01-1": 2}
        assert t.stats.acked == 1 and t.stats.resent == 1 and t.stats.stray_acks == 1
    finally:
        t.close()
        srv.close()


def test_a_refusal_is_counted_and_not_resent(port: int) -> None:
    srv = Listener(port, lambda c, n: ack(c, "AR", "unknown bed"))
    t = _client(port)
    try:
        _monitor(t).cycle(0)
        assert t.flush(10)
        assert srv.copies == {"MON01-1": 1}
        assert t.stats.nacked == 1 and t.stats.resent == 0
        assert t.stats.last_refusal.startswith("AR") and "unknown bed" in t.stats.last_refusal
    finally:
        t.close()
        srv.close()


def test_reconnects_after_the_listener_restarts(port: int) -> None:
    srv = Listener(port, lambda c, n: ack(c))
    t = _client(port)
    m = _monitor(t)
    try:
        m.cycle(0)
        assert t.flush(5) and t.stats.acked == 1
        srv.close()  # the gateway restarts: connection gone, port closed for a while
        wait_until(lambda: not t.connected, 5, "the client to notice the lost connection")
        m.cycle(1)  # while down: dropped, not back-filled (GE p=17)
        assert m.stats.overruns == 1
        srv = Listener(port, lambda c, n: ack(c))
        assert t.wait_connected(5)
        for n in range(2, 5):
            m.cycle(n)
        assert t.flush(10)
        assert t.stats.acked == 4 and t.stats.connects == 2 and t.stats.disconnects == 1
        assert sorted(parse_oru(f).seq for f in srv.frames) == [3, 4, 5]  # seq 2 was lost
    finally:
        t.close()
        srv.close()


def test_connection_lost_mid_ack_resends_on_the_new_connection(port: int) -> None:
    box: dict[str, Listener] = {}

    def drop_first(control: str, n: int) -> bytes:
        if n == 1:  # read the frame, then die without an ACK (port closed at once)
            box["srv"].close()
            return b""
        return ack(control)

    box["srv"] = Listener(port, drop_first)
    t = _client(port, ack_timeout=2.0)
    try:
        _monitor(t).cycle(0)
        wait_until(lambda: not t.connected or t.stats.resent, 5, "the drop")
        srv2 = Listener(port, lambda c, n: ack(c))
        assert t.flush(10)
        # Resent at least once (a reconnect that races the first listener's close may
        # resend twice); the new listener gets it exactly once and it is acked once.
        assert t.stats.acked == 1 and t.stats.resent >= 1 and srv2.copies == {"MON01-1": 1}
        srv2.close()
    finally:
        t.close()
        box["srv"].close()


def test_many_monitors_share_one_listener_through_a_runner(port: int) -> None:
    srv = Listener(port, lambda c, n: ack(c))
    monitors = []
    for i in range(4):
        t = _client(port)
        monitors.append(
            Monitor(
                f"bed-{i + 1}",
                GeneratedSource("stable", i),
                t,
                bed_number=i + 1,
                clock_start=T0,
                profile="mindray",
                speed=60,
                max_rate=50,
            )
        )
    runner = MonitorRunner(monitors)
    try:
        runner.run(duration=1.0)
        for m in monitors:
            assert m.transport.flush(10)  # type: ignore[attr-defined]
            acks = m.transport.stats  # type: ignore[attr-defined]
            assert acks.acked == m.stats.sent > 10 and acks.lost == 0
        beds = {parse_oru(f).bed for f in srv.frames}
        assert beds == {"bed-1", "bed-2", "bed-3", "bed-4"} and srv.connections == 4
    finally:
        runner.close()
        srv.close()


def test_truncated_frames_are_sent_without_waiting(port: int) -> None:
    srv = Listener(port, lambda c, n: ack(c))
    t = _client(port)
    try:
        assert t.write(b"\x0bMSH|^~\\&|half a frame")
        assert t.flush(5)
        assert t.stats.unframed == 1 and t.stats.resent == 0
    finally:
        t.close()
        srv.close()


def test_ack_parsing() -> None:
    assert parse_ack(ack("X-1")[1:-2]) == ("AA", "X-1", "")
    code, control, detail = parse_ack(ack("X-2", "AE", "bad OBX")[1:-2])
    assert (code, control) == ("AE", "X-2") and "bad OBX" in detail
    with pytest.raises(ValueError, match="no MSA"):
        parse_ack(b"MSH|^~\\&|x")
    assert control_id_of(frame("MSH|^~\\&|a|b|c|d|e||ORU^R01|C-9|P|2.6")) == "C-9"
    assert control_id_of(b"\x0bMSH|^~\\&|no end") is None


def test_vigil_sim_mllp_connect_sends_to_a_listener_and_reports_acks(port: int) -> None:
    from typer.testing import CliRunner

    from vigil_cli.main import app

    srv = Listener(port, lambda c, n: ack(c))
    try:
        args = ["sim", "--mllp-connect", f"127.0.0.1:{port}", "--beds", "2"]
        args += ["--profile", "standard", "--speed", "60", "--duration", "1.5s"]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        lines = res.stdout.splitlines()
        assert lines[:2] == [f"bed-1 mllp://127.0.0.1:{port}", f"bed-2 mllp://127.0.0.1:{port}"]
        assert "bed-1: acked" in res.stderr and "lost 0" in res.stderr
        assert srv.connections == 2 and {parse_oru(f).bed for f in srv.frames} == {
            "bed-1",
            "bed-2",
        }
    finally:
        srv.close()
