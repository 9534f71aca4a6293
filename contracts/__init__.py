"""Contracts every part of Vigil agrees on: vital-sign catalogue, canonical table,
preprocessing, NEWS2, MQTT topics and messages, model bundle manifest and signature,
and what every part's command line shares (`contracts.cli`: `fail()`, `--data`).

This package imports nothing of the other parts and no TensorFlow.
"""
