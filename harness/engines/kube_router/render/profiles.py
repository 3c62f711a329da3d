"""kube-router version profiles: what differs between the releases the harness reproduces.

Facts were read from kube-router's source (pkg/controllers/netpol, pkg/utils); where a stored
source for a release was not available the choice is marked in ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    """One kube-router release line, as far as the rendered rules and the sync differ."""

    name: str
    # TMP set + ``swap`` in one ``ipset restore`` (v1.3+) vs flush and refill in place (v1.2).
    swap_sets: bool
    # Dual-stack (v2.0+): the family ("IPv4") is hashed into policy chain and set names.
    family: str
    # RELATED,ESTABLISHED accept inline in each pod chain (v1.x) vs a jump to KUBE-NWPLCY-COMMON.
    common_chain: bool
    # KUBE-NWPLCY-TAIL jump at the end of each top-level chain; --netpol-default-deny possible.
    tail_chain: bool
    # endPort honoured (``--dport a:b``); older releases matched only ``port``.
    end_port: bool
    # Comment of the KUBE-ROUTER-INPUT rule that lets service cluster IPs through.
    cluster_ip_comment: str
    # KUBE-ROUTER-INPUT also lets SCTP node ports through.
    sctp_node_ports: bool
    notes: str = ""


PROFILES: dict[str, Profile] = {
    "v1.2": Profile(
        name="v1.2", swap_sets=False, family="", common_chain=False, tail_chain=False, end_port=False,
        cluster_ip_comment="allow traffic to cluster IP", sctp_node_ports=False,
        notes="pod chain layout of the v1.3 source (all local pods get a chain); sets refilled in place",
    ),
    "v1.3": Profile(
        name="v1.3", swap_sets=True, family="", common_chain=False, tail_chain=False, end_port=False,
        cluster_ip_comment="allow traffic to cluster IP", sctp_node_ports=False,
    ),
    "v2.6": Profile(
        name="v2.6", swap_sets=True, family="IPv4", common_chain=True, tail_chain=False, end_port=True,
        cluster_ip_comment="allow traffic to primary/secondary cluster IP range", sctp_node_ports=False,
    ),
    "v2.10": Profile(
        name="v2.10", swap_sets=True, family="IPv4", common_chain=True, tail_chain=True, end_port=True,
        cluster_ip_comment="allow traffic to primary/secondary cluster IP range", sctp_node_ports=True,
    ),
}


def get_profile(name: str, source: str | None = None) -> Profile:
    """The profile called ``name``; a ConfigError naming the valid ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(source, "profile", f"unknown kube-router profile {name!r} "
                          f"(one of {', '.join(PROFILES)})") from None
