"""Bedside monitor simulator: HL7 v2 ORU^R01 over MLLP on a serial line or TCP."""
