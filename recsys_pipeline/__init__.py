"""recsys-pipeline: MovieLens ratings to trained, compared recommenders, orchestrated by Dagster.

Importing this package (or its core subpackages ``data``, ``models``, ``training``,
``evaluation``) never imports dagster or mlflow; the orchestration layer lives in
``recsys_pipeline.definitions`` and the modules it imports.
"""

__version__ = "0.1.0"
