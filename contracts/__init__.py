"""Contracts every part of Vigil agrees on: vital-sign catalogue, canonical table,
preprocessing, NEWS2, MQTT topics and messages, model bundle manifest and signature.

This package imports nothing of the other parts and no TensorFlow.
"""
