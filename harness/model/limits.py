"""Upper bounds on what the loaders accept (topology YAML, manifests, conformance cases).

Every input file is a user's mistake waiting to happen, or an adversary's: without bounds a
typo of a few digits in ``count`` or a ten-line YAML alias bomb costs gigabytes and minutes
before anything says no. Each bound is far above what the harness is used for and turns
into a one-line ConfigError naming the file and the field. README lists them ("Limits").
"""

from __future__ import annotations

# Files
MAX_FILE_BYTES = 8 * 1024 * 1024  # one YAML file; the pure-Python parser reads ~1 MB/s
MAX_YAML_DEPTH = 64  # nesting of mappings/lists (a NetworkPolicy needs about 10)
MAX_YAML_ALIASES = 1000  # *alias uses per document
MAX_YAML_NODES = 1_000_000  # scalars+collections per document after expanding aliases

# Cluster size: Kubernetes' own documented large-cluster limits (5,000 nodes, 150,000 pods).
MAX_NODES = 5000
MAX_PODS = 150_000

# Templates: a zero-padded width ``{index:03d}`` is the only format spec; names are <= 253 chars.
MAX_TEMPLATE_WIDTH = 63

# Conformance cases: every step probes every pod pair of the topology.
MAX_CASE_STEPS = 500

# Error messages: a value shown in a message is cut to this many characters.
MAX_SHOWN_CHARS = 200


def cut(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """Message text on one line and at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def shown(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters; big containers are
    described by their size instead of being repr'd (a repr of an aliased tree can be huge)."""
    if isinstance(value, (dict, list, tuple, set)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (Python's int_max_str_digits)
        return "an integer of thousands of digits"
    return text if len(text) <= limit else text[:limit] + "..."
