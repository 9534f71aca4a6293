"""Nurse terminal UI of the gateway (Textual): ward, bedside, events and help screens.

Entry point: `edge_agent.ui.app.run_ui(gateway)`. The UI only reads the core's
observable state and sends nurse actions back through the core's alarm path; the
gateway's threads never wait on it.
"""
