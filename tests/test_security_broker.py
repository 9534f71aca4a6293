"""TLS identities and ACLs against a REAL Mosquitto started from the shipped config.

`deploy/mosquitto/mosquitto.conf` and `deploy/mosquitto/acl` are used as shipped;
only their file paths and the listener port are rewritten (a temporary folder and a
free port on 127.0.0.1: `test_only_paths_and_port_differ_from_the_shipped_config`
proves nothing else changed). Certificates come from `cloud_hub.ca`.

Mosquitto 2.0.11 started as root drops to user `mosquitto` *before* it reads the
TLS files, the CRL and the ACL; so, as in production, the broker's folder is handed
to that user (when the tests run as root; as another user, Mosquitto stays that user).

Clients are paho-mqtt 2 speaking MQTT 5, so an ACL denial is visible as PUBACK reason
"Not authorized" (MQTT 3.1.1 hides it); each denial is also checked from the other
side: a subscriber allowed to see the topic never receives the message, while a
control message sent right after it does arrive (so the subscriber demonstrably works).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud_hub.ca import CertificateAuthority
from contracts import topics
from tests.support.broker import needs_mosquitto
from tests.support.tls import (
    CONFIGS,
    DYNSEC_PLUGIN,
    SHIPPED_CONF,
    SHIPPED_PLUGIN,
    STRICT_CONF,
    WAIT,
    Broker,
    Client,
    broker_folder,
    render_conf,
)

pytestmark = needs_mosquitto

NOT_AUTHORIZED = 135  # MQTT 5 reason code 0x87


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> CertificateAuthority:
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"))
    ca.init()
    ca.issue_server(dns=["localhost"], ips=["127.0.0.1"])
    ca.issue_hub(days=30)
    for gw in ("gw-a", "gw-b", "gw-revoked"):
        ca.enroll_gateway(gw, days=30)
    ca.revoke("gw-revoked", reason="stolen")
    return ca


@pytest.fixture(scope="module")
def rogue(tmp_path_factory) -> CertificateAuthority:
    """Another CA issuing a certificate for a real gateway's name."""
    ca = CertificateAuthority(tmp_path_factory.mktemp("rogue"))
    ca.init(common_name="Vigil fleet CA")
    ca.issue_server()
    ca.enroll_gateway("gw-a")
    return ca


def _mode(request) -> str:
    if request.param == "strict" and DYNSEC_PLUGIN is None:
        pytest.skip("mosquitto_dynamic_security.so not installed")
    return request.param


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def broker(pki, request):
    b = Broker(broker_folder(), pki, mode=_mode(request))
    b.start()
    yield b
    b.stop()
    shutil.rmtree(b.folder, ignore_errors=True)


@pytest.fixture
def connect(broker, pki):
    """connect(name) -> a connected Client with that identity's certificate."""
    opened: list[Client] = []
    counter = iter(range(10_000))

    def _connect(name: str) -> Client:
        folder = pki.hub_dir if name == "hub" else pki.gateway_dir(name)
        c = Client(broker, folder, client_id=f"{name}-{next(counter)}-{os.getpid()}")
        opened.append(c)
        assert c.connect(), f"{name} could not connect: {c.connack} {c.error}"
        return c

    yield _connect
    for c in opened:
        c.close()


def _payload(tag: str) -> bytes:
    return f'{{"test": "{tag}", "nonce": {time.monotonic_ns()}}}'.encode()


@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_only_paths_and_port_differ_from_the_shipped_config(tmp_path, mode):
    shipped = CONFIGS[mode].read_text().splitlines()
    rendered = render_conf(tmp_path / "etc", tmp_path / "data", 12345, CONFIGS[mode])
    rendered = rendered.splitlines()
    assert len(shipped) == len(rendered)
    changed = [
        (a, b) for a, b in zip(shipped, rendered, strict=True) if a != b and not a.startswith("#")
    ]
    assert changed, "the test must at least move the files and the port"
    for a, b in changed:
        key_a, key_b = a.split()[0], b.split()[0]
        assert key_a == key_b and key_a in {
            "acl_file",
            "plugin",
            "plugin_opt_config_file",
            "persistence_location",
            "cafile",
            "certfile",
            "keyfile",
            "crlfile",
            "listener",
        }, (a, b)
    assert "require_certificate true" in shipped
    assert "use_identity_as_username true" in shipped
    assert "allow_anonymous false" in shipped
    assert [ln for ln in shipped if ln.startswith("listener")] == ["listener 8883"]


def test_strict_config_differs_only_in_access_control():
    def settings(path: Path) -> list[str]:
        return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]

    default, strict = settings(SHIPPED_CONF), settings(STRICT_CONF)
    assert [ln for ln in default if ln not in strict] == ["acl_file /etc/mosquitto/vigil/acl"]
    assert [ln for ln in strict if ln not in default] == [
        f"plugin {SHIPPED_PLUGIN}",
        "plugin_opt_config_file /etc/mosquitto/vigil/dynamic-security.json",
    ]


def test_gateway_publishes_its_own_topics_and_the_hub_receives_them(connect):
    hub, gw = connect("hub"), connect("gw-a")
    for f in topics.GATEWAY_FILTERS:
        assert not hub.subscribe(topics.shared(f))[0].is_failure
    sent = {
        topics.status("gw-a"): _payload("status"),
        topics.model_state("gw-a"): _payload("model"),
        topics.shadow("gw-a"): _payload("shadow"),
        topics.vitals("gw-a", "bed-1"): _payload("vitals"),
        topics.risk("gw-a", "bed-1"): _payload("risk"),
        topics.alarm("gw-a", "bed-1"): _payload("alarm"),
        topics.observation("gw-a", "bed-1"): _payload("observation"),
    }
    for topic, payload in sent.items():
        assert gw.publish(topic, payload).is_failure is False, topic
    for topic, payload in sent.items():
        assert hub.wait_for(payload), f"hub did not receive {topic}"


def test_gateway_cannot_publish_as_another_gateway(connect):
    hub, gw_a = connect("hub"), connect("gw-a")
    hub.subscribe(topics.shared("vigil/v1/gw/#"))
    hub.subscribe("vigil/v1/gw/#")
    forged = _payload("forged risk for gw-b")
    rc = gw_a.publish(topics.risk("gw-b", "bed-1"), forged)
    assert rc.value == NOT_AUTHORIZED and rc.getName() == "Not authorized"
    rc = gw_a.publish(topics.status("gw-b"), _payload("forged status"), retain=True)
    assert rc.value == NOT_AUTHORIZED
    control = _payload("control")
    assert gw_a.publish(topics.risk("gw-a", "bed-1"), control).is_failure is False
    assert hub.wait_for(control)
    assert not hub.got(forged)


def test_gateway_cannot_publish_a_model_or_a_command_but_the_hub_can(connect):
    hub, gw_a, gw_b = connect("hub"), connect("gw-a"), connect("gw-b")
    gw_b.subscribe(topics.models("stable"))
    gw_b.subscribe(topics.cmd("gw-b"))
    fake_model = _payload("model from a gateway")
    assert gw_a.publish(topics.models("stable"), fake_model, retain=True).value == NOT_AUTHORIZED
    fake_cmd = _payload("command from a gateway")
    assert gw_a.publish(topics.cmd("gw-b"), fake_cmd).value == NOT_AUTHORIZED
    own_cmd = _payload("a gateway commanding itself")
    assert gw_b.publish(topics.cmd("gw-b"), own_cmd).value == NOT_AUTHORIZED

    real_model = _payload("model from the hub")
    assert not hub.publish(topics.models("stable"), real_model).is_failure
    real_cmd = _payload("command from the hub")
    assert not hub.publish(topics.cmd("gw-b"), real_cmd).is_failure
    assert gw_b.wait_for(real_model) and gw_b.wait_for(real_cmd)
    assert not gw_b.got(fake_model) and not gw_b.got(fake_cmd) and not gw_b.got(own_cmd)


def test_gateway_cannot_read_another_gateways_commands_or_telemetry(connect):
    hub, gw_a, gw_b = connect("hub"), connect("gw-a"), connect("gw-b")
    gw_a.subscribe(topics.cmd("gw-a"))
    # Mosquitto 2.0.11 grants these subscriptions (its acl_file does not check
    # subscriptions) but must never deliver a message gw-b may not read.
    for f in (topics.cmd("gw-a"), "vigil/v1/gw/#", "#", topics.shared("vigil/v1/gw/+/cmd")):
        gw_b.subscribe(f)
    secret_cmd = _payload("cmd for gw-a")
    assert not hub.publish(topics.cmd("gw-a"), secret_cmd).is_failure
    telemetry = _payload("gw-a risk")
    assert gw_a.publish(topics.risk("gw-a", "bed-1"), telemetry).is_failure is False
    assert gw_a.wait_for(secret_cmd)
    time.sleep(0.5)  # give a wrongful delivery time to arrive
    assert not gw_b.got(secret_cmd) and not gw_b.got(telemetry)


def test_gateway_in_the_hubs_share_group_reads_nothing(broker, connect):
    """Confidentiality holds even when a gateway subscribes to `$share/hub/...`.

    With the acl_file (Mosquitto 2.0) the subscription itself is granted, the gateway
    takes its turn in the group and the messages dealt to it are dropped (availability,
    not a leak; deploy/README.md). The strict config refuses the subscription, and the
    hub then receives every message.
    """
    hub, gw_a, gw_b = connect("hub"), connect("gw-a"), connect("gw-b")
    shared_vitals = topics.shared(f"{topics.PREFIX}/gw/+/bed/+/vitals")
    assert not hub.subscribe(shared_vitals)[0].is_failure
    granted = gw_b.subscribe(shared_vitals)[0]
    if broker.mode == "strict":
        assert granted.value == NOT_AUTHORIZED
    sent = [_payload(f"vitals {i}") for i in range(6)]
    for p in sent:
        assert gw_a.publish(topics.vitals("gw-a", "bed-2"), p).is_failure is False
    if broker.mode == "strict":
        assert all(hub.wait_for(p) for p in sent)
    else:
        deadline = time.monotonic() + WAIT
        while not any(hub.got(p) for p in sent) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(hub.got(p) for p in sent)
    time.sleep(0.3)
    assert not any(gw_b.got(p) for p in sent)


def test_strict_broker_refuses_subscriptions_outside_the_gateways_rights(broker, connect):
    if broker.mode != "strict":
        pytest.skip("the acl_file config grants every subscription (deliveries are checked)")
    gw_b = connect("gw-b")
    for f in ("#", "vigil/v1/gw/#", topics.cmd("gw-a"), topics.shared("vigil/v1/gw/+/cmd")):
        assert gw_b.subscribe(f)[0].value == NOT_AUTHORIZED, f
    assert not gw_b.subscribe(topics.cmd("gw-b"))[0].is_failure
    assert not gw_b.subscribe(topics.models("stable"))[0].is_failure


def test_strict_broker_gives_a_gateway_enrolled_after_its_start_no_rights(broker, pki):
    """Fail closed: the new identity is unknown to the plugin until the broker restarts."""
    if broker.mode != "strict":
        pytest.skip("the acl_file's %u patterns apply to any certificate of the fleet CA")
    name = "gw-late"
    if not pki.active(name):
        pki.enroll_gateway(name, days=30)
    c = Client(broker, pki.gateway_dir(name), client_id="gw-late-1")
    try:
        if c.connect():  # it does connect (TLS is fine); it just may do nothing
            assert c.publish(topics.status(name), b"online").value == NOT_AUTHORIZED
            assert c.subscribe(topics.cmd(name))[0].value == NOT_AUTHORIZED
    finally:
        c.close()


def _refused(broker: Broker, folder: Path | None, ca_file: Path | None = None) -> Client:
    c = Client(broker, folder, client_id=f"refused-{time.monotonic_ns()}", ca_file=ca_file)
    ok = c.connect(timeout=3)
    c.client.loop_stop()
    c.client.disconnect()
    assert not ok, "the broker accepted a client it must refuse"
    return c


def test_certificate_from_another_ca_cannot_connect(broker, pki, rogue, connect):
    _refused(broker, rogue.gateway_dir("gw-a"))
    # the same name with the fleet's certificate is fine: the CA made the difference
    assert connect("gw-a").connected.is_set()


def test_revoked_certificate_cannot_connect(broker, pki):
    _refused(broker, pki.gateway_dir("gw-revoked"))


def test_broker_server_certificate_is_no_client_identity(broker, pki):
    """Extended key usage is enforced: the broker's own (server-auth) certificate,
    named "localhost", cannot log in as a client."""
    c = Client(broker, pki.broker_dir, client_id="server-as-client", cert_name="server")
    ok = c.connect(timeout=3)
    c.client.loop_stop()
    assert not ok


def test_client_without_certificate_cannot_connect(broker):
    _refused(broker, None)


def test_gateway_refuses_a_broker_certificate_from_another_ca(broker, pki, rogue):
    """Server authentication: a gateway trusting only its CA will not talk to an impostor."""
    _refused(broker, pki.gateway_dir("gw-a"), ca_file=rogue.ca_cert_path)


def test_plain_text_mqtt_to_the_tls_port_is_refused(broker):
    # MQTT 3.1.1 CONNECT, clean session, keepalive 30, client id "plain"
    connect_packet = bytes.fromhex("101100044d5154540402001e0005706c61696e")
    with socket.create_connection(("127.0.0.1", broker.port), timeout=3) as s:
        s.sendall(connect_packet)
        try:
            reply = s.recv(16)
        except (ConnectionResetError, TimeoutError):
            reply = b""
    assert not reply.startswith(b"\x20"), f"got a CONNACK over plain text: {reply!r}"
    # the paho client without TLS fares no better
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plain-paho", protocol=mqtt.MQTTv5)
    accepted = threading.Event()
    c.on_connect = lambda *a: accepted.set() if not a[3].is_failure else None
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        assert not accepted.wait(2)
    finally:
        c.loop_stop()
        c.disconnect()


@pytest.mark.parametrize("mode", sorted(CONFIGS))
def test_revocation_locks_out_on_reload_and_drops_the_session_on_restart(pki, mode):
    """The operator's flow: enroll, connect, revoke; reload: no new connection; restart:
    the live session is dropped too (Mosquitto 2.0.11 re-reads crlfile on SIGHUP)."""
    if mode == "strict" and DYNSEC_PLUGIN is None:
        pytest.skip("mosquitto_dynamic_security.so not installed")
    name = f"gw-lost-{mode}"
    pki.enroll_gateway(name, days=30)
    b = Broker(broker_folder(), pki, mode=mode)
    b.start()
    try:
        c = Client(b, pki.gateway_dir(name), client_id=f"{name}-1")
        assert c.connect()
        assert c.publish(topics.status(name), b"online").is_failure is False
        pki.revoke(name, reason="device lost")
        b.reload()
        _refused(b, pki.gateway_dir(name))
        assert not c.closed.is_set()  # a reload does not end a live session...
        b.restart()  # ...a restart does
        assert c.closed.wait(WAIT), "the revoked gateway's session survived the restart"
        c.client.loop_stop()
        _refused(b, pki.gateway_dir(name))
    finally:
        b.stop()
        shutil.rmtree(b.folder, ignore_errors=True)


def test_hub_ingest_over_the_locked_down_broker_stores_only_what_the_certificate_allows(
    broker, pki, connect, tmp_path
):
    """End to end: certificate CN -> topic (broker ACL) -> payload gw (hub check)."""
    from sqlalchemy import select

    from cloud_hub.ingest import HubWorker
    from cloud_hub.settings import HubSettings
    from cloud_hub.store.models import DeadLetter, RiskEvent
    from tests.support.hub import fresh_engine, risk

    engine = fresh_engine(f"sqlite:///{tmp_path}/hub.db")
    settings = HubSettings(
        mqtt_host="localhost",  # a name in the broker certificate
        mqtt_port=broker.port,
        worker_id=f"sec-{broker.mode}",
        batch_ms=20,
        tls_ca=pki.hub_dir / "ca.crt",
        tls_cert=pki.hub_dir / "client.crt",
        tls_key=pki.hub_dir / "client.key",
    )
    worker = HubWorker(settings, engine).start(migrate_store=False)
    try:
        assert worker.wait_ready(), "the hub did not subscribe over TLS"
        gw_a = connect("gw-a")
        genuine = risk(gw="gw-a", bed="bed-1", stay="p000001")
        assert gw_a.publish(topics.risk("gw-a", "bed-1"), genuine.to_json()).is_failure is False
        forged_topic = risk(gw="gw-b", bed="bed-1", stay="p000002")
        rc = gw_a.publish(topics.risk("gw-b", "bed-1"), forged_topic.to_json())
        assert rc.value == NOT_AUTHORIZED
        # its own topic, someone else's name in the payload: the hub refuses it
        forged_payload = risk(gw="gw-b", bed="bed-1", stay="p000003")
        assert (
            gw_a.publish(topics.risk("gw-a", "bed-1"), forged_payload.to_json()).is_failure is False
        )
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            with engine.connect() as c:
                stored = c.execute(select(RiskEvent.event_id, RiskEvent.gw)).all()
                dead = c.execute(select(DeadLetter.reason_kind, DeadLetter.gw)).all()
            if stored and dead:
                break
            time.sleep(0.05)
        assert [(str(e), g) for e, g in stored] == [(str(genuine.event_id), "gw-a")]
        assert dead == [("topic_mismatch", "gw-a")]
    finally:
        worker.stop(drain_seconds=1, retire=True)
        engine.dispose()
