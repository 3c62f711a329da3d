"""Repository-level pytest configuration.

The harness's own plugin (``harness.pytest_plugin``) is loaded through its ``pytest11``
entry point once the package is installed (the README's commands do that)."""
