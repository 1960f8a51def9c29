"""MLflow tracking, lineage (git, dvc.lock) and the model registry. The only layer that imports mlflow."""
