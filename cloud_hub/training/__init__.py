"""Model training for Vigil: dataset, architectures, metrics, baselines, MLflow tracking.

`dataset` turns the canonical table into model inputs through the shared
preprocessing, `models` builds the three architectures, `metrics` and `plots` judge
them, `baselines` adds NEWS2 and logistic regression, `train` tracks and registers
everything in MLflow. TensorFlow and MLflow are imported inside functions only.

For other parts (retraining, rollout):

    from cloud_hub.training.train import TrainConfig, compare
    from cloud_hub.training.bundle import bundle_champion

    comp = compare(TrainConfig(data=path, tracking_uri=uri, epochs=6))  # tracked, registered
    comp.champion            # ModelResult: name, run_id, version, val/test Evaluation, model
    comp.table("val")        # the Markdown comparison table
    bundle_champion(comp, out_dir, key_path)                             # signed int8 bundle

The registry alias `champion` (`tracking.CHAMPION_ALIAS`) of `vigil-sepsis` names the
newest comparison's best network by validation utility.
"""
