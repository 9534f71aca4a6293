"""`vigil sim watch`: read a monitor's line and print each message decoded, one per line.

Opens a serial device with pyserial or connects to ``tcp://host:port``; counts what is
not a clean frame (noise bytes, truncated frames, undecodable messages, seq gaps).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable
from typing import TextIO

from contracts.vitals import VITAL_NAMES

from .hl7 import DecodedMessage, MllpDecoder, parse_oru


def _reader(address: str, baud: int) -> tuple[Callable[[], bytes], Callable[[], None]]:
    if address.startswith("tcp://"):
        host, _, port = address[len("tcp://") :].rpartition(":")
        sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=5)
        sock.settimeout(0.5)

        def read() -> bytes:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                return b""
            if not data:
                raise EOFError(f"{address} closed the connection")
            return data

        return read, sock.close
    import serial

    port_ = serial.Serial(address, baudrate=baud, timeout=0.5)
    return (lambda: port_.read(65536)), port_.close


def format_line(msg: DecodedMessage) -> str:
    vals = " ".join(
        f"{n}={'--' if msg.values.get(n) is None else f'{msg.values[n]:g}'}" for n in VITAL_NAMES
    )
    return f"{msg.obs_time:%Y-%m-%d %H:%M:%S} {msg.bed} {msg.stay_id} #{msg.seq} {vals}"


def watch(
    address: str,
    baud: int = 115200,
    count: int | None = None,
    duration: float | None = None,
    out: TextIO | None = None,
) -> dict[str, int]:
    """Print decoded messages until `count` messages or `duration` seconds; the counts.

    `out` defaults to the sys.stdout of the call, not of the import (a default bound at
    import kept a stream that a test runner had since closed)."""
    out = sys.stdout if out is None else out
    read, close = _reader(address, baud)
    dec = MllpDecoder()
    counts = {"messages": 0, "undecodable": 0, "seq_gaps": 0, "seq_restarts": 0}
    last_seq: dict[str, int] = {}
    t0 = time.monotonic()
    try:
        while (count is None or counts["messages"] < count) and (
            duration is None or time.monotonic() - t0 < duration
        ):
            for f in dec.feed(read()):
                if count is not None and counts["messages"] >= count:
                    break
                try:
                    msg = parse_oru(f)
                except (ValueError, UnicodeDecodeError) as e:
                    counts["undecodable"] += 1
                    print(f"!! undecodable frame ({len(f)} bytes): {e}", file=out)
                    continue
                counts["messages"] += 1
                prev = last_seq.get(msg.monitor_id)
                if prev is not None and msg.seq == 1 and prev != 0:
                    counts["seq_restarts"] += 1
                    print(f"!! {msg.monitor_id} restarted (reboot)", file=out)
                elif prev is not None and msg.seq > prev + 1:
                    counts["seq_gaps"] += 1
                    print(f"!! {msg.monitor_id} lost {msg.seq - prev - 1} message(s)", file=out)
                last_seq[msg.monitor_id] = msg.seq
                print(format_line(msg), file=out, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        close()
    counts["noise_bytes"] = dec.noise_bytes
    counts["truncated"] = dec.truncated
    return counts
