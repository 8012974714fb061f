"""GUARD's CDK app: one stack per tenant config (see app.py and docs/deploy.md)."""
