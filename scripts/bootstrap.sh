#!/usr/bin/env bash
# Installs everything netpol-harness needs on a fresh Debian machine (run as root):
# kernel tools from apt, a venv in .venv, and the harness itself (editable) with its
# dependencies. Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(iptables ipset conntrack iproute2 procps kmod python3-venv mariadb-server mariadb-client docker.io ipvsadm nftables dnsmasq-base)
need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${need_apt[*]} (apt)"
  # Installing docker.io or mariadb-server would start their system services, and a system
  # dockerd creates docker0 and iptables rules in the root network namespace. The harness runs
  # private instances of its own, so the packages are installed without starting anything
  # (Debian's policy-rc.d convention, only while apt runs, only if the host has none).
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  trap 'if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# others_can_run PYTHON: can users other than its owner run this interpreter and read its
# standard library? A venv links to its interpreter (and --copies still reads the stdlib from
# the base install), so a pyenv under root's 0700 home gives a venv only root can run, and the
# non-root path (kernel tests skip with the reason, kernel commands exit 4 with a hint) is
# then unreachable for everyone else.
others_can_run() {
  "$1" - <<'PYEOF' 2>/dev/null
import os, stat, sys, sysconfig
for target in (os.path.realpath(sys.executable), os.path.realpath(sysconfig.get_paths()["stdlib"])):
    path = target
    while True:
        mode = os.stat(path).st_mode
        need = stat.S_IXOTH | (stat.S_IROTH if path == target else 0)
        if mode & need != need:
            sys.exit(1)
        if path == "/":
            break
        path = os.path.dirname(path)
PYEOF
}
PY=${PYTHON:-python3}
if ! others_can_run "$PY" && [ -z "${PYTHON:-}" ] && others_can_run /usr/bin/python3 \
   && /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: $(command -v "$PY") is not usable by other users: the venv uses /usr/bin/python3"
  PY=/usr/bin/python3
fi
if [ -x .venv/bin/python ] && ! others_can_run .venv/bin/python && others_can_run "$PY"; then
  echo "bootstrap: .venv links to an interpreter other users cannot run: recreating it"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: pip install -e .[dev]"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# br_netfilter makes bridged pod traffic traverse iptables (kube-router relies on it);
# the per-namespace switch bridge-nf-call-iptables is then set only inside lab namespaces.
modprobe br_netfilter 2>/dev/null || true
