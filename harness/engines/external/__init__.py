"""An external process as an engine: the user's own program enforces policy on a node, speaking
JSON lines (``protocol`` parses what it prints, ``engine`` runs it in the node's namespace)."""
