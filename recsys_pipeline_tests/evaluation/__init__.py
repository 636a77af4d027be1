"""Tests for recsys_pipeline.evaluation (core: torch, numpy, pyarrow only)."""
