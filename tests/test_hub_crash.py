"""A hub killed with SIGKILL mid-stream loses nothing and stores nothing twice.

`vigil hub serve` runs as a real process against a REAL Mosquitto and a REAL
PostgreSQL store; a gateway-like publisher streams QoS 1 messages while the hub is
killed (no chance to commit or acknowledge what it holds) and started again with
the same worker id. Because messages are acknowledged only after their batch is
committed, the broker redelivers whatever the dead hub held.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

from sqlalchemy import func, select

from cloud_hub.store.models import VitalsSummary
from tests.support.broker import needs_mosquitto
from tests.support.hub import Publisher, fresh_engine, postgres_database, vitals
from tests.support.waiting import wait_until

pytestmark = needs_mosquitto


def serve(broker, url: str, worker_id: str, log_path) -> subprocess.Popen:
    env = os.environ | {
        "VIGIL_HUB_MQTT_PORT": str(broker.port),
        "VIGIL_HUB_DB_URL": url,
        "VIGIL_HUB_WORKER_ID": worker_id,
        "VIGIL_HUB_BATCH_SIZE": "100",
        "VIGIL_HUB_BATCH_MS": "300",  # long batches: the kill lands on uncommitted ones
    }
    log = open(log_path, "ab")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(
        [sys.executable, "-m", "vigil_cli.main", "hub", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stored(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(VitalsSummary)).scalar_one()


def test_sigkill_mid_stream_loses_nothing_and_stores_nothing_twice(broker, tmp_path):
    with postgres_database() as url:
        engine = fresh_engine(url)
        worker_id = f"crash-{uuid.uuid4().hex[:6]}"
        log_path = tmp_path / "hub.log"
        hub = serve(broker, url, worker_id, log_path)
        n = 1500
        msgs = [vitals(stay=f"s{i % 5}", hour=i / 60) for i in range(n)]
        pub = Publisher(broker.port)

        def stream() -> None:
            for i in range(0, n, 50):
                pub.send_messages(msgs[i : i + 50])
                time.sleep(0.02)

        try:
            wait_until(
                lambda: b"event=connected" in log_path.read_bytes(),
                timeout=60,
                what="the hub to connect",
            )
            sender = threading.Thread(target=stream)
            sender.start()
            wait_until(lambda: stored(engine) >= 200, timeout=60, what="some messages stored")
            hub.send_signal(signal.SIGKILL)
            hub.wait(10)
            at_kill = stored(engine)
            sender.join(60)
            assert at_kill < n, "the hub was killed after the stream ended: nothing tested"
            hub = serve(broker, url, worker_id, log_path)
            wait_until(lambda: stored(engine) == n, timeout=60, what=f"all {n} messages")
            time.sleep(0.5)  # would a redelivered message add a row? it must not
            assert stored(engine) == n
            with engine.connect() as c:
                ids = set(c.execute(select(VitalsSummary.event_id)).scalars())
            assert ids == {str(m.event_id) for m in msgs}
        finally:
            pub.close()
            if hub.poll() is None:
                hub.send_signal(signal.SIGTERM)
                hub.wait(20)
            engine.dispose()
        assert hub.returncode == 0, log_path.read_text()[-2000:]
