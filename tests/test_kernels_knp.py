"""kube-network-policies' NATIVE datapath on a kernel with nft_queue: boot a cached Debian 6.1
kernel (the host lacks CONFIG_NFT_QUEUE) and run the ``knp`` suite inside: two conformance cases
and ``bench queue --smoke``, whose rows must say ``native`` and one verdict per connection (the
accept verdict's NFQA_CT label lets the rest of each flow skip the queue).

Runs only with ``-m kernel_matrix`` (about 3 min here under TCG); needs what
tests/test_kernels_smoke.py needs.
"""

import json
import os

import pytest

from harness.cli import main

pytestmark = pytest.mark.kernel_matrix


@pytest.fixture(autouse=True)
def _only_when_selected(request):
    # a -m on the command line replaces addopts' "not kernel_matrix": boot only when asked for
    if "kernel_matrix" not in (request.config.option.markexpr or "").replace("not kernel_matrix", ""):
        pytest.skip("boots a VM for minutes: run with -m kernel_matrix")
RELEASE = "6.1.0-57-amd64"


def test_native_queue_datapath_in_a_vm(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    out = tmp_path / "run"
    rc = main(["kernels", "run", "--kernel", RELEASE.removesuffix("-amd64"), "--suite", "knp",
               "--timeout", "700", "--out", str(out)])
    table = capsys.readouterr().out
    kdir = out / RELEASE
    assert rc == 0, (table, (kdir / "conformance-knp.out").read_text() if (kdir / "conformance-knp.out").exists()
                     else "")
    assert "| conformance-knp | pass 2/2 |" in table
    rows = json.loads((kdir / "queue.json").read_text())["extra"]["rows"]
    knp = [r for r in rows if r["engine"] == "kube-network-policies"]
    assert knp and all(r["datapath"] == "native" and r["verdicts"] == r["connections"] for r in knp), knp
