"""The only door to the kernel: netns entry, netlink message packing and batching (rtnl, ipset),
and the iptables/ipset/nft tool execs. Imports nothing of the harness above ``harness.errors``."""
