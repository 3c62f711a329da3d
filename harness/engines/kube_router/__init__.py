"""kube-router's network policy controller, reproduced per release tag: render (ipsets and filter
chains per node) and apply (full sync strategies over iptables-nft or -legacy)."""
