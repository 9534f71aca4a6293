"""Bedside monitor simulator: HL7 v2 ORU^R01 over MLLP on a serial line (pty) or TCP.

Plays a patient monitor made by someone else, so it imports only `contracts/` (plus
numpy, pyserial and the standard library; pyarrow only inside the replay loader).

- `hl7`: the wire layout (documented there) and pure builders/decoders
- `physiology`: replayed real stays and generated scenario patients
- `faults`: the fault spec language, the plan per monitor and the fault log
- `transports`: pty, serial device, TCP server
- `monitor`: `Monitor`, `MonitorRunner`, `generated_ward` (the Python API)
- `cli`, `watch`: `vigil sim` and `vigil sim watch`
"""
