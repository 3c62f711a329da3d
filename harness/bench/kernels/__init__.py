"""Kernel matrix (issue 15): the same bench suites on other kernels, booted in VMs with virtme-ng.

``vm`` is the pure part: kernel specs, the ``vng`` command line, and what a finished boot's
console log and exit mean. Facts checked on this machine (Debian 12 host, virtme-ng 1.42, qemu 7.2,
TCG): Debian's ``linux-image-6.1.0-47-amd64-unsigned`` unpacked with ``dpkg-deb -x`` boots in
~12 s; its modules need ``depmod -b ROOT VERSION`` first (the package ships no modules.dep);
ipset needs ``ip_set`` loaded explicitly in the guest; vng's own exit code is 255 even when the
guest script succeeds (no virtio script ports), so results must come back as files in ``--rwdir``;
nested KVM aborts at once ("failed to set MSR"), so KVM is probed with a short boot first.
"""
