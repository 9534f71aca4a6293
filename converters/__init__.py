"""Raw ICU data sets (PhysioNet 2019, MIMIC-III) to the canonical vitals table."""
