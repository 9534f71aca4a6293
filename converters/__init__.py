"""Raw datasets to the canonical vitals table; Keras models to signed int8 TFLite bundles."""
