"""What the tests (and the benches) share, one of each, imported as `tests.support.<module>`.

- `net`: `free_port`, `wait_port`;
- `waiting`: `wait_until`;
- `broker`: `Mosquitto`, a private broker with config overrides (the `broker` fixture
  in tests/conftest.py), `needs_mosquitto`, `Subscriber`;
- `tls`: the shipped TLS + ACL broker config on a private Mosquitto, a TLS client;
- `edge`: monitor frames, real PhysioNet stays, `edge_settings()`, `make_publisher`;
- `hub`: message factories, a QoS 1 publisher, throwaway hub stores;
- `rollout`, `chaos`, `sim`, `ui`: the helpers of those test families.

Not test modules (no `test_` prefix).
"""
