"""GUARD: GitOps Upgrade Automation with Rollback Detection (shared Lambda package)."""
