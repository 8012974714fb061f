"""Operator commands for GUARD (`python -m cli ...`; run with `PYTHONPATH=lambdas:.`)."""
