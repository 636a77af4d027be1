"""Tests of Optuna hyperparameter tuning: core, asset, MLflow runs and CLI."""
