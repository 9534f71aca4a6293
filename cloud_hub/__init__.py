"""Hub: MQTT ingest and store, training with MLflow, model rollout."""
