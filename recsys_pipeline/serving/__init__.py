"""Core serving code: answers for people (recommendations, checks, new users, exports).

Plain Python, numpy, pyarrow and torch (scikit-learn / matplotlib for the embedding projection,
onnx / onnxruntime for the ONNX export, both imported only where used); no dagster or mlflow
imports. Everything speaks original MovieLens ids and titles at its boundary, never indices.
"""
