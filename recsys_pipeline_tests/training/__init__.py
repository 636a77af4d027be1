"""Tests for recsys_pipeline.training (core: torch, numpy, pyarrow only)."""
