# Sourced by scenarios.sh, last (issue 24): the kubelet with the root
# directory of another distribution, k0s's with the newest kubelet and
# MicroK8s's with the oldest, and the daemon as the chart's preset for it
# renders it (run.sh rendered chart-<preset>-<registration>.yaml). The
# kubelet's device-plugin directory stays /var/lib/kubelet/device-plugins
# (kubernetes#120626) while plugins_registry, plugins and pod-resources
# follow the root. Needs scenarios.sh's helpers.

# 13. Kubelet root of k0s or MicroK8s.
case $kubelet in
  kubelet) preset=k0s root=/var/lib/k0s/kubelet ;;
  *) preset=microk8s root=/var/snap/microk8s/common/var/lib/kubelet ;;
esac
# The root's mount point: run.sh made it (and removes it) on the machine;
# its contents are the run's.
mkdir -p "$work/root$root"
mount --bind "$work/root$root" "$root"
# Every container of the earlier scenarios killed (as scenario 5 does) and
# their manifests gone, then the kubelet started again with the new root.
stop kubelet
for f in /run/containerd/io.containerd.runtime.v2.task/k8s.io/*/init.pid; do
  [ -e "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
done
rm -f "$work"/manifests/*.yaml
# The kubelet re-creates its socket; gone first, the wait below sees the new one.
rm -f /var/lib/kubelet/device-plugins/kubelet.sock
t0=$(now_ms)
start kubelet env PATH="$bin:$PATH" "$bin/$kubelet" --config "$work/kubelet.yaml" --hostname-override e2e-node --root-dir "$root"
podres_root() { "$bin/podres" -socket "$root/pod-resources/kubelet.sock" "$@"; }
wait_for "the pod-resources socket under the $preset root" test -S "$root/pod-resources/kubelet.sock"
wait_for "kubelet.sock re-created in /var/lib/kubelet/device-plugins" test -S /var/lib/kubelet/device-plugins/kubelet.sock
[ -e "$root/device-plugins/kubelet.sock" ] && fail "the kubelet put kubelet.sock under its root"
[ -d "$root/plugins_registry" ] || fail "no plugins_registry under the $preset root"
ok "$preset layout: kubelet --root-dir $root; kubelet.sock stays in /var/lib/kubelet/device-plugins, plugins_registry and pod-resources follow the root"

# The daemon's arguments as the chart renders them for the preset, minus
# the container's --config and --host-root.
chart_args() {
  python3 - "$work/chart-$preset-$1.yaml" <<'PY'
import sys, yaml
ds = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "DaemonSet")
args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
print(" ".join(a for a in args if a != "deviceplugin" and not a.startswith(("--config=", "--host-root="))))
PY
}
cat >"$work/roots.yaml" <<T
resourceName: $R
hostPath: {path: $work/data, type: Directory}
volumeMount: {mountPath: /sample}
T
reads() { [ "$(cat "$work/out/$1" 2>/dev/null)" = "through the mount" ]; }
for registration in kubelet-socket plugin-watcher; do
  args=$(chart_args "$registration")
  case $args in *"--plugins-registry-dir=$root/plugins_registry"*"--pod-resources-socket=$root/pod-resources/kubelet.sock"*) ;;
    *) fail "the chart's $preset preset renders $args" ;; esac
  t0=$(now_ms)
  # shellcheck disable=SC2086 # the chart's arguments, one word each
  start daemon "$daemon" --config "$work/roots.yaml" $args
  podres_root -resource "$R" -want 100 -timeout 30s >/dev/null || fail "$preset, $registration: not registered"
  ok "$preset, $registration, the chart's flags ($args): start → 100 allocatable in $(( $(now_ms) - t0 )) ms"
  if [ "$registration" = plugin-watcher ]; then
    [ -S "$root/plugins_registry/$(echo "$R" | tr / -).sock" ] || fail "no socket in $root/plugins_registry"
  fi
  pod "roots-$registration"
  wait_for "pod roots-$registration to read the file through the mount" reads "roots-$registration"
  ok "$preset, $registration: a pod got its mount (read the file through it)"
  rm -f "$work/manifests/roots-$registration.yaml"
  stop daemon
  podres_root -resource "$R" -want 0 -timeout 30s >/dev/null || fail "$preset, $registration: still allocatable after SIGTERM"
done

# The chart's DaemonSet pod itself (plugin-watcher), our image, as a static
# pod: the kubelet directories at their host paths under the root.
mkdir -p "$work/cfg-roots"
cp "$work/roots.yaml" "$work/cfg-roots/config.yaml"
static_daemonset_pod "$work/chart-$preset-plugin-watcher.yaml" plugin-roots "$work/cfg-roots"
t0=$(now_ms)
podres_root -resource "$R" -want 100 -timeout 60s >/dev/null || fail "$preset: the chart's DaemonSet pod did not register"
ok "$preset: the chart's DaemonSet pod (our image, plugin watcher) registered: manifest → 100 allocatable in $(( $(now_ms) - t0 )) ms"
# Ready: its exec probe, with the preset's flags, finds the sockets.
wait_for "the chart's DaemonSet pod to be Ready (its exec probe)" static_pod_ready plugin-roots
ok "$preset: the chart's DaemonSet pod is Ready: its probe, given the preset's flags, reaches the registration socket"
pod roots-chart
wait_for "pod roots-chart to read the file through the mount" reads roots-chart
ok "$preset: a pod got its mount from the chart's DaemonSet pod"
