"""The int8 risk model at run time: LiteRT loading and the gateway's bundle checks.

TensorFlow-free (NumPy + `ai_edge_litert`), so the gateway and the hub's pre-release
check run the very same code. Imports only `contracts`.
"""
