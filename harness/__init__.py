"""netpol-harness: kernel-level test harness for Kubernetes NetworkPolicy enforcement."""

__version__ = "0.1.0"
