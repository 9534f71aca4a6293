"""Bedside gateway: reads the monitor, scores windows with int8 TFLite, alarms, publishes."""
