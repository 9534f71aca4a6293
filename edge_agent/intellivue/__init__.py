"""Philips IntelliVue "Data Export" driver: the monitor's own binary protocol (issue 16).

Implemented from the Philips "IntelliVue Patient Monitor Data Export Interface
Programming Guide" (4535 642 59271, Rev. G; cited as "Guide" with its chapter and
page), and checked against the byte layouts of independent open implementations and
against a real monitor's captured frame (tests/samples/intellivue/SOURCES.md).

- `framing`: the MIB/RS-232 frame (BOF 0xC0, header, user data, FCS, EOF 0xC1,
  0x7D transparency); a bad frame is counted and skipped, never raised.
- `protocol`: the messages (association request/result, release, abort, MDS create
  event and its result, single and extended poll data request/result, keep-alive,
  connect indication), encode and decode, and the numeric observation values.
- `driver`: the state machine (associate, answer MDS create, poll numerics at 1 s,
  keep alive, re-associate after silence, release on stop; listen-only) that turns
  poll results into `edge_agent.decoder.Reading`s, over pyserial or UDP.
"""
