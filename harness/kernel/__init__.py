"""The only door to the kernel: netns entry (``netns``), one netlink layer (``netlink``: attribute
packer, batch sender, reply reader) under the rtnetlink and ipset message builders (``rtnl``,
``ipset_netlink``, with the ipset op vocabulary in ``ipset_ops``), and the iptables/ipset tool
execs (``backends``). Imports nothing of the harness but ``harness.errors`` (tests/test_layering.py)."""
