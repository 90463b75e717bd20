{{/*
Helpers of the chart. The names are fixed, as deploy/'s are: one
installation per cluster (a node serves a resource through one daemon).
*/}}

{{- define "hp.labels" -}}
app.kubernetes.io/name: k8s-hostpath-device-plugin
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: k8s-hostpath-device-plugin
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "hp.image" -}}
{{- $i := .Values.image -}}
{{- if $i.digest -}}
{{ $i.repository }}@{{ $i.digest }}
{{- else -}}
{{ $i.repository }}:{{ $i.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The kubelet's --root-dir: the free path, else the preset's. */}}
{{- define "hp.root" -}}
{{- $presets := dict "k8s" "/var/lib/kubelet" "k3s" "/var/lib/kubelet" "rke2" "/var/lib/kubelet" "k0s" "/var/lib/k0s/kubelet" "microk8s" "/var/snap/microk8s/common/var/lib/kubelet" -}}
{{- $root := .Values.kubelet.rootDir | default (get $presets .Values.kubelet.preset) -}}
{{- if not $root -}}
{{- fail (printf "kubelet.preset %q is not one of k8s, k3s, rke2, k0s, microk8s (or set kubelet.rootDir)" .Values.kubelet.preset) -}}
{{- end -}}
{{- trimSuffix "/" $root | default "/" -}}
{{- end }}

{{/*
The daemon's flags for the kubelet's directories, where they are not its
defaults, as a JSON list: the daemon and its probe take the same.
*/}}
{{- define "hp.kubeletArgs" -}}
{{- $root := include "hp.root" . -}}
{{- $args := list -}}
{{- if ne .Values.kubelet.devicePluginDir "/var/lib/kubelet/device-plugins" -}}
{{- $args = append $args (printf "--device-plugin-dir=%s" .Values.kubelet.devicePluginDir) -}}
{{- end -}}
{{- if ne $root "/var/lib/kubelet" -}}
{{- $args = concat $args (list (printf "--plugins-registry-dir=%s/plugins_registry" $root) (printf "--plugins-dir=%s/plugins" $root) (printf "--pod-resources-socket=%s/pod-resources/kubelet.sock" $root)) -}}
{{- end -}}
{{- if ne .Values.kubelet.cdiDir "/var/run/cdi" -}}
{{- $args = append $args (printf "--cdi-dir=%s" .Values.kubelet.cdiDir) -}}
{{- end -}}
{{- toJson $args -}}
{{- end }}

{{/* The config file's text, whichever way the values give it. */}}
{{- define "hp.configObject" -}}
{{- if not .Values.config -}}
{{- .Files.Get "files/default-config.yaml" -}}
{{- else if kindIs "string" .Values.config -}}
{{- .Values.config -}}
{{- else -}}
{{- toYaml .Values.config -}}
{{- end -}}
{{- end }}

{{/*
The resources of the config and the paths each serves, as JSON: a list of
{name, paths}, for the admission policy and the DeviceClasses. The same
reading of the three forms as the daemon's (DESIGN.md section 3).
*/}}
{{- define "hp.resources" -}}
{{- $c := include "hp.configObject" . | fromYaml -}}
{{- if hasKey $c "Error" -}}
{{- fail (printf "config: not YAML: %s" $c.Error) -}}
{{- end -}}
{{- $usb := "/dev/bus/usb/[0-9][0-9][0-9]/[0-9][0-9][0-9]" -}}
{{- $out := list -}}
{{- if hasKey $c "devices" -}}
{{- $domain := $c.domain | default "devic.es" -}}
{{- range $c.devices -}}
{{- $paths := list -}}
{{- range .groups -}}
{{- range .paths -}}{{- $paths = append $paths .path -}}{{- end -}}
{{- if .usb -}}{{- $paths = append $paths $usb -}}{{- end -}}
{{- end -}}
{{- $out = append $out (dict "name" (printf "%s/%s" $domain .name) "paths" (uniq $paths)) -}}
{{- end -}}
{{- else -}}
{{- $list := list $c -}}
{{- if hasKey $c "resources" -}}{{- $list = $c.resources -}}{{- end -}}
{{- range $list -}}
{{- $paths := list -}}
{{- if .usb -}}
{{- $paths = append $paths $usb -}}
{{- else if .group -}}
{{- range .group -}}{{- $paths = append $paths (.hostPath | default dict).path -}}{{- end -}}
{{- else -}}
{{- $paths = append $paths (.hostPath | default dict).path -}}
{{- end -}}
{{- $out = append $out (dict "name" .resourceName "paths" (uniq $paths)) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end }}

{{/*
RE2 for one path component: literal characters escaped, glob wildcards kept
within the component. `"` is written \x22 (the CEL string delimiter).
*/}}
{{- define "hp.componentRe" -}}
{{- if not (regexMatch "[*?\\[]" .) -}}
{{- regexQuoteMeta . | replace "\"" "\\x22" -}}
{{- else -}}
{{- range regexFindAll "\\[[!^]?\\]?[^\\]]*\\]|\\*|\\?|[^*?\\[]+|\\[" . -1 -}}
{{- if eq . "*" -}}
[^/]*
{{- else if eq . "?" -}}
[^/]
{{- else if and (hasPrefix "[" .) (hasSuffix "]" .) (gt (len .) 2) -}}
{{- $in := trimSuffix "]" (trimPrefix "[" .) -}}
{{- $neg := or (hasPrefix "!" $in) (hasPrefix "^" $in) -}}
{{- if $neg -}}{{- $in = substr 1 (len $in) $in -}}{{- end -}}
[{{ if $neg }}^/{{ end }}{{ regexReplaceAll "([^A-Za-z0-9-])" $in "\\${1}" | replace "\\\"" "\\x22" }}]
{{- else -}}
{{- regexQuoteMeta . | replace "\"" "\\x22" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{/* RE2 for a served path (or pattern) and everything under it, however written. */}}
{{- define "hp.pathRe" -}}
{{- $p := clean . -}}
{{- if eq $p "/" -}}
^/
{{- else -}}
{{- $parts := list -}}
{{- range splitList "/" (trimPrefix "/" $p) -}}
{{- $parts = append $parts (include "hp.componentRe" .) -}}
{{- end -}}
^/+(\./+)*{{ join "/+(\\./+)*" $parts }}(/+.*)?$
{{- end -}}
{{- end }}

{{/* The policy's CEL list of served paths: pattern, path, resource. */}}
{{- define "hp.served" -}}
{{- $items := list -}}
{{- range include "hp.resources" . | fromJsonArray -}}
{{- $name := .name -}}
{{- range .paths -}}
{{- $items = append $items (printf "{\"re\": r\"%s\", \"path\": \"%s\", \"resource\": \"%s\"}" (include "hp.pathRe" .) (. | replace "\\" "\\\\" | replace "\"" "\\\"") $name) -}}
{{- end -}}
{{- end -}}
[{{ join ", " $items }}]
{{- end }}

{{/* A resource's DeviceClass name: <name>.<domain>, else a hash of it. */}}
{{- define "hp.className" -}}
{{- $parts := splitn "/" 2 . -}}
{{- $domain := "" -}}{{- $name := . -}}
{{- if contains "/" . -}}{{- $domain = $parts._0 -}}{{- $name = $parts._1 -}}{{- end -}}
{{- $name = regexReplaceAll "[^a-z0-9.-]" (lower $name) "-" -}}
{{- $plain := $name -}}
{{- if $domain -}}{{- $plain = printf "%s.%s" $name $domain -}}{{- end -}}
{{- if and (le (len $plain) 253) (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$" $plain) -}}
{{- $plain -}}
{{- else -}}
hostpath-{{ sha256sum . | trunc 16 }}
{{- end -}}
{{- end }}
