"""The docker backend's pure parts (no engine, no root unless stated)."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from harness.errors import EnvironmentProblem
from harness.lab import docker_engine
from harness.lab.docker_engine import ENGINE_ROOT, MINIMAL_ETC, Engine, _engine_error_line, rootfs_tar
from harness.lab.docker_pods import ENTRYPOINT, DockerLab, _iso_ns, mariadb_job_argv


def test_rootfs_is_deterministic_and_mirrors_the_host_layout():
    a, b = rootfs_tar(), rootfs_tar()
    assert a == b  # same content hash -> the cached image is reused
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(a)).getmembers()}
    for p in ("/bin", "/sbin", "/lib", "/lib64"):
        if os.path.islink(p):
            assert members[p[1:]].issym() and members[p[1:]].linkname == os.readlink(p)
        elif os.path.isdir(p):
            assert members[p[1:]].isdir()
    for d in ("usr", "etc", "proc", "sys", "dev", "tmp", "nph"):
        assert members[d].isdir(), d
    assert members["tmp"].mode & stat.S_ISVTX
    files = {n for n, m in members.items() if m.isfile()}
    # the only files: the generated minimal /etc and the host's linker cache (no host secrets)
    assert files <= {f"etc/{n}" for n in MINIMAL_ETC} | {"etc/ld.so.cache"}, files
    assert {f"etc/{n}" for n in MINIMAL_ETC} <= files and "etc/shadow" not in members
    passwd = tarfile.open(fileobj=io.BytesIO(a)).extractfile("etc/passwd").read().decode()  # type: ignore[union-attr]
    assert [ln.split(":")[0] for ln in passwd.splitlines()] == ["root", "nobody"]
    assert all(m.name.startswith("etc/alternatives/") for m in members.values()
               if m.issym() and m.name.startswith("etc/"))


def test_host_mounts_are_read_only_and_skip_symlinks():
    mounts = Engine.host_mounts()
    assert mounts["/usr"] == {"bind": "/usr", "mode": "ro"}
    assert "/etc" not in mounts  # the pod gets a generated /etc, never the host's
    assert not [p for p in mounts if os.path.islink(p)]
    assert all(m["mode"] == "ro" for m in mounts.values())


def test_entrypoint_waits_for_the_go_signal_then_execs_the_command():
    assert ENTRYPOINT[:2] == ["/bin/sh", "-c"] and "read _ < /nph/go" in ENTRYPOINT[2]
    assert ENTRYPOINT[2].endswith('exec "$@"')


@pytest.mark.parametrize("stamp, ns", [
    ("2026-11-26T01:45:16.193891208Z", 1795657516193891208),
    ("2026-11-26T01:45:16.5Z", 1795657516500000000),
    ("2026-11-26T01:45:16Z", 1795657516000000000),
    ("0001-01-01T00:00:00Z", None),
    ("", None),
])
def test_docker_timestamps_parse_to_ns(stamp, ns):
    assert _iso_ns(stamp) == ns


def test_engine_error_line_is_the_engines_own(tmp_path):
    log = tmp_path / "dockerd.log"
    log.write_text('time="x" level=info msg="Starting up"\n'
                   'time="x" level=fatal msg="failed to start daemon: error initializing graphdriver: '
                   'driver not supported"\n\n')
    assert "error initializing graphdriver: driver not supported" in _engine_error_line(str(log))
    log.write_text("")
    assert _engine_error_line(str(log)) == "empty log"
    assert _engine_error_line(str(tmp_path / "none")) == "no log"


def test_mariadb_job_argv():
    argv = mariadb_job_argv("10.244.0.7", 3306, timeout_s=2)
    assert argv[:2] == ["mariadb", "--no-defaults"] and "10.244.0.7" in argv and "--connect-timeout=2" in argv
    assert argv[-2:] == ["-e", "SELECT 1"]


class _FakeLab:
    cluster = "the cluster"

    def __init__(self):
        self.added: list[str] = []

    def add_pod(self, pod):
        self.added.append(pod.key)
        return 1

    def remove_pod(self, key):
        return 2


class _FakePods:
    def __init__(self):
        self.made: dict[str, list[str] | None] = {}
        self.envs: dict[str, dict[str, str] | None] = {}

    def add(self, pod, argv, env=None):
        self.made[pod.key] = argv
        self.envs[pod.key] = env

        class R:
            network_ready_ns = 5
        return R()

    def is_container(self, key):
        return key in self.made

    def remove(self, key):
        return 6


def test_docker_lab_routes_selected_pods_to_containers():
    from harness.model.cluster import Pod

    lab, pods = _FakeLab(), _FakePods()
    dl = DockerLab(lab, pods, select=lambda p: p.namespace == "batch")  # type: ignore[arg-type]
    dl.set_command("batch/j", ["mariadb", "-e", "SELECT 1"], env={"MYSQL_PWD": "pw"})
    assert dl.add_pod(Pod("batch", "j", "node-a")) == 5
    assert dl.add_pod(Pod("web", "w", "node-a")) == 1
    assert pods.made == {"batch/j": ["mariadb", "-e", "SELECT 1"]} and lab.added == ["web/w"]
    assert pods.envs == {"batch/j": {"MYSQL_PWD": "pw"}}  # the password reaches the container's env
    assert dl.cluster == "the cluster"  # everything else is the lab's
    assert dl.remove_pod("batch/j") == 6 and dl.remove_pod("web/w") == 2


def test_a_failing_engine_reports_its_own_error_line(tmp_path, monkeypatch):
    pytest.importorskip("docker")
    if os.geteuid() != 0:
        pytest.skip("starting a private engine needs root")
    fake = tmp_path / "dockerd"
    fake.write_text("#!/bin/sh\necho 'time=\"t\" level=fatal msg=\"failed to start daemon: boom 42\"' >&2\nexit 1\n")
    fake.chmod(0o755)
    before = set(os.listdir(ENGINE_ROOT)) if os.path.isdir(ENGINE_ROOT) else set()
    with pytest.raises(EnvironmentProblem) as e:
        Engine.start_private(dockerd=str(fake))
    assert "dockerd exited with code 1" in str(e.value) and "boom 42" in str(e.value)
    assert set(os.listdir(ENGINE_ROOT)) <= before  # its directory went with it


def test_no_dockerd_is_a_clear_environment_problem(monkeypatch):
    pytest.importorskip("docker")
    monkeypatch.setattr(docker_engine, "find_dockerd", lambda: None)
    with pytest.raises(EnvironmentProblem, match="dockerd is not installed.*apt-get install -y docker.io"):
        Engine.start_private()
