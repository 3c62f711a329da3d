"""Discrete-event simulation of the per-node controllers under churn (pure, no root)."""
