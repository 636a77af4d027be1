"""Core training code: plain Python, numpy, pyarrow and torch; no dagster or mlflow imports."""
