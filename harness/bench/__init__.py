"""Netfilter micro-benchmarks and kernel-regression canaries.

- ``sweep``: sync cost vs cluster size per apply strategy and iptables backend;
- ``datapath``: per-packet cost of N non-matching rules vs one ipset, between two pods;
- ``canaries``: known netfilter regressions (x_tables table replace, ipset swap, big restores);
- ``baseline``: results as JSON (machine, versions, repeats with median and min-max);
- ``compare``: two baselines -> ratio table, regression verdict (pure);
- ``plots``: PNG figures.
"""
