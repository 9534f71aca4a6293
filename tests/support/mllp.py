"""A gateway with MLLP listener beds, as tests drive it: `listen` beds, a `running`
gateway (its listeners bound: with port 0 the kernel picks a free port, read it from
`gw.listeners[0].port`), python-hl7's MLLP client (`send`) and the ACK's MSA-1 (`msa`)."""

from __future__ import annotations

import contextlib

from hl7.client import MLLPClient

from edge_agent.config import BedConfig, BedMatch, Hl7Config, MllpListenSource
from edge_agent.gateway import Gateway
from tests.support.edge import edge_settings
from tests.support.waiting import wait_until


def listen(bed: str, port: int, **match: str) -> BedConfig:
    return BedConfig(
        id=bed, source=MllpListenSource(type="mllp-listen", port=port, match=BedMatch(**match))
    )


@contextlib.contextmanager
def running(tmp_path, broker, beds, gw_id="gw-lst", **hl7):
    s = edge_settings(tmp_path, port=broker.port, gateway_id=gw_id, beds=beds, hl7=Hl7Config(**hl7))
    gw = Gateway(s)
    gw.start()
    try:
        assert wait_until(lambda: all(lst.running for lst in gw.listeners), 10)
        yield gw
    finally:
        gw.stop(flush_timeout=1.0)


def counters(gw: Gateway) -> dict[str, int]:
    gw._mirror_counters()
    return dict(gw.state.snapshot().counters)


def send(port: int, *messages: bytes) -> list[bytes]:
    """Each message over one connection of python-hl7's MLLPClient; the ACKs."""
    with MLLPClient("127.0.0.1", port) as c:
        return [c.send_message(m) for m in messages]


def msa(ack: bytes) -> str:
    """MSA-1 of an MLLP-framed ACK."""
    seg = next(s for s in ack.strip(b"\x0b\x1c\r").split(b"\r") if s.startswith(b"MSA|"))
    return seg.split(b"|")[1].decode()
