#!/bin/sh
# The Pacemaker configuration of README.md, as the pcs commands an operator types: lockd cloned on every node,
# cinder-volume cloned beside it, started after it and only where it runs. tests/pacemaker/ runs this very script.
#
#   deploy/pacemaker/configure.sh          on one node of a running cluster, as root, after the agent is installed
#
# The commands edit a copy of the CIB (`pcs -f`) and the copy replaces the live CIB in one step (cibadmin
# --replace), so the cluster never acts on half a configuration. pcs needs no pcsd for any of this.
# Environment (the defaults are a Debian/Ubuntu node set up as deploy/systemd/ describes):
#   LOCKD_PARAMS          ocf:lockd:lockd parameters (default "config=/etc/lockd/lockd.conf user=lockd")
#   CINDER_VOLUME_AGENT   agent and parameters of cinder-volume (default "systemd:cinder-volume"; RDO:
#                         systemd:openstack-cinder-volume; the tests, which have no systemd: ocf:heartbeat:anything)
set -eu
lockd_params=${LOCKD_PARAMS:-config=/etc/lockd/lockd.conf user=lockd}
cinder_volume_agent=${CINDER_VOLUME_AGENT:-systemd:cinder-volume}
cib=$(mktemp)
trap 'rm -f "$cib"' EXIT
pcs cluster cib "$cib"

# lockd on every node. Two monitors: every 2 s, is the process there (a crash is recovered from at once); every
# 10 s, does /readyz answer, i.e. does etcd (slower, so that an election's blip restarts nothing). A failed
# monitor restarts lockd, and cinder-volume with it; a start that fails
# (etcd still unreachable after the start timeout) bans it from the node until failure-timeout has passed, then
# Pacemaker tries again, so the node comes back by itself once etcd answers.
# shellcheck disable=SC2086 # the parameters are a word list by design
pcs -f "$cib" resource create lockd ocf:lockd:lockd $lockd_params \
    op start timeout=60s op stop timeout=40s \
    op monitor interval=2s timeout=10s op monitor interval=10s timeout=20s OCF_CHECK_LEVEL=10 \
    meta failure-timeout=60s \
    clone interleave=true

# cinder-volume on every node
# shellcheck disable=SC2086
pcs -f "$cib" resource create cinder-volume $cinder_volume_agent \
    op start timeout=120s op stop timeout=120s op monitor interval=30s timeout=60s \
    clone interleave=true

# cinder-volume starts after lockd is ready on the same node, and stops first
pcs -f "$cib" constraint order start lockd-clone then start cinder-volume-clone
# ... and runs only on nodes where lockd runs
pcs -f "$cib" constraint colocation add cinder-volume-clone with lockd-clone INFINITY

cibadmin --replace --xml-file "$cib"
