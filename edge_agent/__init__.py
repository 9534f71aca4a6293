"""Bedside gateway: reads the monitor, scores windows with int8 TFLite, alarms, publishes."""

__version__ = "0.1.0"
