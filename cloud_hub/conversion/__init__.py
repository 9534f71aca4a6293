"""Keras model -> int8 TFLite -> signed bundle, with float/int8 parity checks (TensorFlow side)."""
