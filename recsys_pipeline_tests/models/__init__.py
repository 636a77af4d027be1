"""Tests for recsys_pipeline.models (core: torch, numpy, pyarrow only)."""
