"""The estimators of the CoLoRA model: the shared driver (fitting) and one module per algorithm."""
