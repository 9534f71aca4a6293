"""The gateway's publisher on the shipped TLS + ACL broker, with its enrolled certificate."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from cloud_hub.ca import CertificateAuthority
from contracts import topics
from contracts.messages import parse_message
from edge_agent.config import TlsConfig
from edge_agent.publisher import Publisher, status_payload
from edge_agent.state import GatewayState
from edge_agent.store import Store
from tests.support.broker import needs_mosquitto
from tests.support.edge import edge_settings
from tests.support.tls import Broker, Client, broker_folder

pytestmark = needs_mosquitto


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    ca.init()
    ca.issue_server(dns=["localhost"], ips=["127.0.0.1"])
    ca.issue_hub(days=30)
    ca.enroll_gateway("gw-a", days=30)
    b = Broker(broker_folder(), ca, mode="acl")
    b.start()
    yield b
    b.stop()
    shutil.rmtree(b.folder, ignore_errors=True)


def test_gateway_publishes_over_tls_and_a_refused_topic_is_set_aside_not_retried(
    tls_broker, tmp_path
):
    ca = tls_broker.ca
    folder = ca.gateway_dir("gw-a")
    s = edge_settings(
        tmp_path,
        port=tls_broker.port,
        gateway_id="gw-a",
        store="tls.sqlite",
        mqtt={
            "host": "localhost",
            "tls": TlsConfig(
                ca=folder / "ca.crt", cert=folder / "client.crt", key=folder / "client.key"
            ),
        },
    )
    hub = Client(tls_broker, ca.hub_dir, client_id="hub-edge-test")
    assert hub.connect()
    hub.subscribe("vigil/v1/gw/#")
    store = Store(s.store_path)
    state = GatewayState("gw-a", ["b1"])
    pub = Publisher(s, store, state, status_payload(s, state))
    pub.start()
    try:
        assert pub._connected.wait(10), "gateway could not connect with its certificate"
        pub.publish(topics.risk("gw-a", "b1"), b'{"n": 1}')
        pub.publish(topics.risk("gw-b", "b1"), b'{"n": 2}')  # not its own: the ACL refuses
        pub.publish(topics.risk("gw-a", "b1"), b'{"n": 3}')
        assert hub.wait_for(b'{"n": 3}', 10)
        assert pub.wait_idle(10)
        got = [json.loads(p)["n"] for t, p in hub.received if t.endswith("/risk")]
        assert got == [1, 3]
        rejected = store.rows("outbox_rejected")
        assert len(rejected) == 1 and rejected[0]["topic"] == topics.risk("gw-b", "b1")
        assert "authori" in rejected[0]["reason"].lower()
        statuses = [parse_message(p) for t, p in hub.received if t == topics.status("gw-a")]
        assert statuses and statuses[-1].state == "online"
        time.sleep(0.2)
        assert state.snapshot().broker_connected and state.snapshot().outbox == 0
    finally:
        pub.stop()
        hub.close()
