"""kube-router's IPVS service proxy (issue 12 item 2), per real node: ``plan`` (Services +
endpoints -> dummy-link addresses, IPVS services/real servers, sysctls, ipsets, iptables; pure,
cited to kube-router v2.10.0), ``sync`` (one sync as ordered kernel calls; pure), ``ipvsadm``
(the tool's text both ways; pure), ``apply`` (programs a node namespace, timed per phase),
``detect`` (does this kernel have IPVS), ``experiment`` (the kernel-matrix suite: ClusterIP
reachability, a real server removed under expire_nodest_conn 1 vs 0, sync cost per service)."""
