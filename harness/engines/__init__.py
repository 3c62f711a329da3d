"""Systems under test: everything that enforces NetworkPolicy on a node, behind one protocol."""
