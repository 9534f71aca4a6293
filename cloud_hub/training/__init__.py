"""Model training for Vigil: dataset, architectures, metrics, baselines, MLflow tracking.

`dataset` turns the canonical table into model inputs through the shared
preprocessing, `models` builds the three architectures, `metrics` and `plots` judge
them, `baselines` adds NEWS2 and logistic regression, `train` tracks and registers
everything in MLflow. TensorFlow and MLflow are imported inside functions only.
"""
