"""mlplat.training: the torch trainer with MLflow tracking and spot-safe checkpoints."""
