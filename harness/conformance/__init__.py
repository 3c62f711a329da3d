"""Conformance: case files in the shape of the upstream NetworkPolicy e2e suite, run against the
kernel (``runner``) and checked against an explicit or the oracle's truth table.

``case`` is pure (loading, validation, model changes per step, expected tables); ``runner``
builds a lab and has the policy engine program every real node; ``commands`` is the CLI.
"""
