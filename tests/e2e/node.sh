#!/usr/bin/env bash
# One node of make e2e-cluster, run by cluster-scenarios.sh in a mount
# namespace of its own: its root is a directory of the run's, holding the
# machine's system directories bound in and its own /run, /tmp and kubelet
# and containerd state; the node pivots into it, so a path made under that
# directory (/sample) exists on this node only. Starts containerd and the
# kubelet there, records their PIDs, and waits on them.
set -euo pipefail
work=$1 bin=$2 cbin=$3 node=$4 port=$5 nodeip=$6 subnet=$7
. "$(dirname "$0")/lib.sh"
export PATH="$bin:$cbin:$PATH"
n=$work/$node r=$work/$node/root
readlink /proc/self/ns/mnt >"$work/mntns.$node"
mkdir -p "$r" "$n/run" "$n/tmp" "$n/kubelet" "$n/containerd" "$n/pods" "$n/containers" "$n/cni"
mount --bind "$r" "$r"
for d in /*; do
  name=${d#/}
  case $name in
    proc|sys|dev) mkdir -p "$r/$name"; mount --rbind "$d" "$r/$name" ;;
    run|tmp) mkdir -p "$r/$name"; mount --bind "$n/$name" "$r/$name" ;;
    lost+found|sample) ;;
    *)
      if [ -L "$d" ]; then cp -P "$d" "$r/$name" 2>/dev/null || true
      elif [ -d "$d" ]; then mkdir -p "$r/$name"; mount --rbind "$d" "$r/$name"
      fi ;;
  esac
done
# The node's own state: empty directories of the machine's are the mount
# points (as make e2e does), the contents are the run's.
for pair in kubelet:/var/lib/kubelet containerd:/var/lib/containerd pods:/var/log/pods containers:/var/log/containers; do
  mkdir -p "${pair#*:}"
  mount --bind "$n/${pair%%:*}" "$r${pair#*:}"
done
# The run's directory (certificates, kubeconfigs, logs) and the cached
# binaries at their own paths: either may be under the machine's /tmp or
# /run, which the node does not see (XDG_CACHE_HOME=/tmp/...).
for d in "$work" "$bin" "$cbin"; do
  mkdir -p "$r$d"
  mount --bind "$d" "$r$d"
done
cd "$r"
mkdir -p .old
pivot_root . .old
umount -l /.old
rmdir /.old
cd /
# HostToContainer mounts (the DaemonSet's host root) need a shared source.
mount --make-rshared /

# A pod network of the node's own: ptp (a veth pair per pod, gone with the
# pod's network namespace) and host-local addresses from this node's /24,
# its state in the run's directory.
cat >"$n/cni/10-e2e.conflist" <<T
{"cniVersion": "1.0.0", "name": "e2e-$node", "plugins": [{"type": "ptp", "ipMasq": false,
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet"}]], "dataDir": "$n/cni-ipam"}}]}
T
cat >"$n/containerd.toml" <<T
version = 3
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  # No registry here: the images are built and imported by the run.
  sandbox = 'e2e.local/hostpath:pause'
[plugins.'io.containerd.cri.v1.runtime']
  # These VMs lack CAP_SYS_RESOURCE: runc cannot set oom_score_adj -998.
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['$cbin']
  conf_dir = '$n/cni'
T
"$bin/containerd" --config "$n/containerd.toml" >>"$work/containerd-$node.log" 2>&1 &
record_pid "containerd-$node" $!
for _ in $(seq 600); do [ -S /run/containerd/containerd.sock ] && break; sleep 0.05; done

cat >"$n/kubelet.yaml" <<T
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
# The address the node reports, so the API server reaches it for kubectl logs.
address: $nodeip
# Ports of each node's own, clear of a real kubelet's 10250/10248.
port: $port
readOnlyPort: 0
healthzPort: $((port + 1))
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $work/pki/ca.crt}
authorization: {mode: AlwaysAllow}
failSwapOn: false
localStorageCapacityIsolation: false
makeIPTablesUtilChains: false
evictionHard: {}
T
# The kubelet's command in a file of its own: the DRA scenarios restart it
# in this namespace (cluster-dra.sh's restart_kubelet).
cat >"$n/start-kubelet" <<T
#!/bin/sh
export PATH='$bin:$cbin:$PATH'
exec '$bin/kubelet' --config '$n/kubelet.yaml' --kubeconfig '$work/pki/$node.kubeconfig' \\
  --hostname-override '$node' --node-ip '$nodeip' >>'$work/kubelet-$node.log' 2>&1
T
chmod +x "$n/start-kubelet"
exec "$n/start-kubelet"
