"""Dagster assets, one module per lake stage; each asset body calls one core function."""
