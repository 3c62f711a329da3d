"""The probe engine: the harness's eyes on the kernel datapath (what *does* happen).

- ``packet``: ``PacketProber`` / ``FlowSpec`` / ``Flow`` / ``ProbeRecord``: TCP SYN, UDP and ICMP
  echo probes from pod namespaces at fixed rates, kernel receive timestamps, one outcome per
  probe (``classify.Outcome``: connected, refused_rst, rejected_icmp, dropped).
- ``classify``: pure parsing and classification of replies.
- ``sockets``: real clients (``tcp_connect``, ``udp_request`` with errno names) and
  ``LongLivedFlows`` (reset_after_established, stall, recovered).
- ``watch``: ``NflogWatcher`` (group 100), ``ConntrackWatcher``, ``NftCommitWatcher``.
- ``matrix``: ``probe_matrix`` (drop-in for ``Lab.matrix``) and ``probe_cells``.
- ``calibrate``: rule flips vs observed transitions; ``commands``: ``calibrate``, ``bench probe``.

Submodules are imported explicitly (scapy is slow to import).
"""
