"""Pure tests of the private apt source of the kernel matrix: suite-qualified kernel names, the
apt argv (data, no network), the madison parse and the resolution to packages (no root, no VM)."""

from dataclasses import replace
from pathlib import Path

import pytest

from harness.bench.kernels import apt
from harness.bench.kernels.fetch import resolve, vmlinuz_path
from harness.bench.kernels.vm import parse_kernel
from harness.errors import ConfigError, HarnessError

ROOT = Path("/c/apt")
# a slice of the real indexes of 2026-12-02 (package -> suite)
INDEX = {
    "linux-image-6.12.107+deb13-amd64-unsigned": "trixie", "linux-image-6.12.107+deb13-amd64": "trixie",
    "linux-image-6.12.117+deb13-amd64-unsigned": "trixie", "linux-image-6.12.117+deb13-amd64": "trixie",
    "linux-image-6.12.95+deb12-amd64-unsigned": "bookworm-backports",
    "linux-image-6.18.15+deb13-amd64": "trixie-backports", "linux-image-6.18.9+deb13-amd64": "trixie-backports",
    "linux-image-7.2.13+deb14-amd64": "sid", "linux-binary-7.2.13+deb14-amd64": "sid",
    "linux-binary-unsigned-7.2.13+deb14-amd64": "sid", "linux-modules-7.2.13+deb14-amd64": "sid",
    "linux-base-7.2.13+deb14-amd64": "sid",
}


def test_suite_qualified_forms():
    k = parse_kernel("trixie:6.12")
    assert (k.kind, k.suites, k.query, k.name, k.release) == ("apt", ("trixie",), "6.12", "trixie:6.12", "")
    assert parse_kernel("unstable:latest").suites == ("sid",)
    # a bare ABI names its suites by +debNN; a package name stands for its ABI
    assert parse_kernel("6.12.117+deb13").suites == ("trixie", "trixie-backports")
    k = parse_kernel("linux-image-7.2.13+deb14-amd64")
    assert (k.name, k.query, k.suites) == ("7.2.13+deb14-amd64", "7.2.13+deb14-amd64", ("sid",))
    assert parse_kernel("trixie-backports:6.18.15+deb13-amd64").query == "6.18.15+deb13-amd64"
    assert parse_kernel("6.1.0-47").kind == "deb"  # the machine's own index, as before


@pytest.mark.parametrize("text, msg", [
    ("jessie:6.1", r"^--kernel: 'jessie:6.1': 'jessie' is not a Debian suite the fetch can reach "
                   r"\(bookworm-backports, trixie, trixie-backports, sid\)$"),
    ("trixie:foo", r"^--kernel: 'trixie:foo': 'foo' is not latest, a series"),
    ("6.12.1+deb99", r"^--kernel: '6.12.1\+deb99': name a suite"),
])
def test_bad_suite_or_version_is_one_line(text, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_kernel(text)


def test_private_apt_argv_never_names_the_machines_sources():
    opts = apt.apt_options(ROOT)
    assert opts == ["-o", "Dir::Etc::SourceList=/c/apt/sources.list", "-o", "Dir::Etc::SourceParts=/dev/null",
                    "-o", "Dir::State::Lists=/c/apt/lists", "-o", "Dir::Cache=/c/apt/cache",
                    "-o", "Dir::Etc::Preferences=/dev/null", "-o", "Dir::Etc::PreferencesParts=/dev/null",
                    "-o", "Acquire::Languages=none"]
    assert apt.update_argv(ROOT) == ["apt-get", *opts, "-q", "update"]
    assert apt.download_argv(ROOT, "linux-modules-7.2.13+deb14-amd64", "sid")[-2:] == [
        "download", "linux-modules-7.2.13+deb14-amd64/sid"]
    assert apt.madison_argv(ROOT, ["a", "b"])[-3:] == ["madison", "a", "b"]
    for argv in (apt.update_argv(ROOT), apt.pkgnames_argv(ROOT)):
        assert not any("/etc/apt" in a or "/var/lib/apt" in a for a in argv)
    lines = apt.sources_list().splitlines()
    assert lines[0] == ("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                        "http://deb.debian.org/debian bookworm-backports main")
    assert [ln.split()[-2] for ln in lines] == ["bookworm-backports", "trixie", "trixie-backports", "sid"]


def test_kernel_packages_and_madison():
    names = ["linux-image-6.12.117+deb13-amd64-unsigned", "linux-image-6.12.117+deb13-cloud-amd64-unsigned",
             "linux-image-7.2.13+deb14-amd64-dbg", "linux-headers-7.2.13+deb14-amd64", "linux-modules-7.2.13+deb14-amd64"]
    assert apt.kernel_packages(names) == ["linux-image-6.12.117+deb13-amd64-unsigned", "linux-modules-7.2.13+deb14-amd64"]
    text = (" linux-image-6.12.117+deb13-amd64 | 6.12.117-1 | http://deb.debian.org/debian trixie/main amd64 Packages\n"
            " linux-modules-7.2.13+deb14-amd64 |   7.2.13-1 | http://deb.debian.org/debian sid/main amd64 Packages\n"
            "      bash |    5.2.15-2+b7 | /var/lib/dpkg/status\n")
    assert apt.parse_madison(text) == {"linux-image-6.12.117+deb13-amd64": "trixie",
                                       "linux-modules-7.2.13+deb14-amd64": "sid"}


def test_resolve_picks_the_newest_and_its_packages():
    k = apt.resolve(parse_kernel("trixie:6.12"), INDEX)
    # numeric, not text order: 117 > 107; the unsigned image carries vmlinuz and modules
    assert (k.name, k.release, k.packages) == ("6.12.117+deb13-amd64", "6.12.117+deb13-amd64",
                                               (("linux-image-6.12.117+deb13-amd64-unsigned", "trixie"),))
    # sid's 7.x: vmlinuz, modules and base files are three packages
    assert apt.resolve(parse_kernel("sid:latest"), INDEX).packages == (
        ("linux-binary-unsigned-7.2.13+deb14-amd64", "sid"), ("linux-modules-7.2.13+deb14-amd64", "sid"),
        ("linux-base-7.2.13+deb14-amd64", "sid"))
    # backports carry only the signed image; a bare ABI looks in trixie and its backports
    assert apt.resolve(parse_kernel("6.18.9+deb13"), INDEX).packages == (
        ("linux-image-6.18.9+deb13-amd64", "trixie-backports"),)
    assert apt.resolve(parse_kernel("bookworm-backports:latest"), INDEX).release == "6.12.95+deb12-amd64"


def test_resolve_not_found_is_one_line():
    with pytest.raises(HarnessError, match=r"^kernel trixie:6.16: no Debian kernel 6.16 in trixie "
                                           r"\(newest there: 6.12.107\+deb13-amd64, 6.12.117\+deb13-amd64\)$"):
        apt.resolve(parse_kernel("trixie:6.16"), INDEX)


def test_an_exact_abi_in_the_cache_resolves_without_apt(tmp_path):
    spec = parse_kernel("6.12.117+deb13")
    img = vmlinuz_path(replace(spec, abi=spec.query), tmp_path)
    img.parent.mkdir(parents=True)
    img.write_text("")
    assert img == tmp_path / "6.12.117+deb13" / "boot" / "vmlinuz-6.12.117+deb13-amd64"
    assert resolve(spec, tmp_path).release == "6.12.117+deb13-amd64"  # no apt-get run: no lists exist
