"""A real controller binary as an engine: a command template run in every real node's namespace
against the lab's served Kubernetes API (``engine``), its template (``template``), the wait for
its kernel state to settle (``settle``) and its Prometheus metrics (``scrape``)."""
