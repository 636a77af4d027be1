"""Tests of the train and evaluate stages: core runner, MLflow tracking, assets."""
