{{/*
One DaemonSet: the device plugin's (dra false) or the DRA driver's (dra
true). Called by daemonset.yaml and dra.yaml with (dict "ctx" $ "dra" bool).
deploy/daemonset.yaml and deploy/dra/daemonset.yaml are the same objects
(make test compares them).
*/}}
{{- define "hp.daemonset" -}}
{{- $ := .ctx -}}
{{- $dra := .dra -}}
{{- $v := $.Values -}}
{{- $root := include "hp.root" $ -}}
{{- $component := ternary "dra-driver" "device-plugin" $dra -}}
{{- /* What the daemon and its probe both need to find the sockets. */ -}}
{{- $where := list -}}
{{- if $dra -}}{{- $where = append $where "--api=dra" -}}{{- end -}}
{{- if and (not $dra) (ne $v.registration "kubelet-socket") -}}
{{- $where = append $where (printf "--registration=%s" $v.registration) -}}
{{- end -}}
{{- $where = concat $where (include "hp.kubeletArgs" $ | fromJsonArray) -}}
{{- $probe := concat (list "/usr/local/bin/k8s-hostpath-device-plugin" "probe" "--config=/k8s-hostpath-device-plugin/config.yaml") $where -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ ternary "hostpath-device-plugin-dra" "hostpath-device-plugin" $dra }}
  namespace: {{ $.Release.Namespace }}
  labels:
    {{- include "hp.labels" $ | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: k8s-hostpath-device-plugin
      app.kubernetes.io/instance: {{ $.Release.Name }}
      app.kubernetes.io/component: {{ $component }}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      {{- if $dra }}
      # A new pod starts beside the old one and registers its own sockets
      # (named after its pod UID); the kubelet takes the newest endpoint.
      maxSurge: 1
      maxUnavailable: 0
      {{- else }}
      maxUnavailable: 1
      {{- end }}
  template:
    metadata:
      labels:
        {{- include "hp.labels" $ | nindent 8 }}
        app.kubernetes.io/component: {{ $component }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- /* No config checksum annotation, on purpose: a changed config
      reaches the pods through live reload, not a restart. */}}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      priorityClassName: {{ $v.priorityClassName }}
      # Sockets only, to the kubelet (and, for DRA, the API server): in the
      # host network it starts before (and without) the cluster's CNI.
      hostNetwork: true
      enableServiceLinks: false
      {{- if $dra }}
      # Its token (projected, bound to the pod and so naming the node) is
      # what the slice policy checks.
      serviceAccountName: hostpath-device-plugin
      {{- else }}
      automountServiceAccountToken: false
      {{- end }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if or $dra $v.nodeSelector }}
      nodeSelector:
        {{- if $dra }}
        hostpath-device.k8s.io/api: dra
        {{- end }}
        {{- with $v.nodeSelector }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      {{- $affinity := deepCopy ($v.affinity | default dict) -}}
      {{- if not $dra -}}
      {{- /* Not on the nodes moved to DRA: one API per node. */ -}}
      {{- $notDra := dict "key" "hostpath-device.k8s.io/api" "operator" "NotIn" "values" (list "dra") -}}
      {{- $node := $affinity.nodeAffinity | default dict -}}
      {{- $req := $node.requiredDuringSchedulingIgnoredDuringExecution | default dict -}}
      {{- $terms := list -}}
      {{- range ($req.nodeSelectorTerms | default (list dict)) -}}
      {{- $terms = append $terms (merge (dict "matchExpressions" (append (.matchExpressions | default list) $notDra)) .) -}}
      {{- end -}}
      {{- $_ := set $req "nodeSelectorTerms" $terms -}}
      {{- $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" $req -}}
      {{- $_ := set $affinity "nodeAffinity" $node -}}
      {{- end }}
      {{- with $affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $component }}
          image: {{ include "hp.image" $ }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args:
            - deviceplugin
            - --config=/k8s-hostpath-device-plugin/config.yaml
            - --host-root=/host
            {{- range $where }}
            - {{ . }}
            {{- end }}
            {{- if ne $v.logFormat "text" }}
            - --log-format={{ $v.logFormat }}
            {{- end }}
            {{- if $v.debug }}
            - --debug
            {{- end }}
            {{- if $v.metrics.enabled }}
            - --listen=:{{ $v.metrics.port }}
            {{- end }}
            {{- with $v.extraArgs }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          env:
            # This node: names the DRA pools (and the Node of its Events).
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            # Names this pod's DRA sockets, so two pods of a rolling update
            # never contend for one name.
            - name: POD_UID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.uid
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- if $v.metrics.enabled }}
          ports:
            - name: metrics
              containerPort: {{ $v.metrics.port }}
              protocol: TCP
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            # Root, to bind sockets in the kubelet's root-owned directories
            # and to stat host paths; no capability is needed for either.
            runAsUser: 0
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            privileged: false
            capabilities:
              drop: ["ALL"]
          livenessProbe:
            exec:
              command: {{ toJson $probe }}
            periodSeconds: 30
            timeoutSeconds: 5
            failureThreshold: 3
          readinessProbe:
            exec:
              command: {{ toJson $probe }}
            periodSeconds: 10
            timeoutSeconds: 5
          volumeMounts:
            # Directories, never sockets: the kubelet re-creates its sockets
            # on every restart. Each at its host path: the paths the daemon
            # hands the kubelet are host paths.
            - name: device-plugins
              mountPath: {{ $v.kubelet.devicePluginDir }}
            - name: pod-resources
              mountPath: {{ $root }}/pod-resources
            - name: plugins-registry
              mountPath: {{ $root }}/plugins_registry
            - name: plugin-dir
              mountPath: {{ $root }}/plugins/hostpath-device.k8s.io
            - name: cdi
              mountPath: {{ $v.kubelet.cdiDir }}
            # The host's / read-only, to inspect host paths on any node;
            # mounts made later on the host propagate into the container.
            - name: host-root
              mountPath: /host
              readOnly: true
              mountPropagation: HostToContainer
            # A directory (no subPath), so ConfigMap updates reach the file
            # and the daemon reloads it.
            - name: config
              mountPath: /k8s-hostpath-device-plugin
              readOnly: true
      volumes:
        - name: device-plugins
          hostPath:
            path: {{ $v.kubelet.devicePluginDir }}
            type: DirectoryOrCreate
        - name: pod-resources
          hostPath:
            path: {{ $root }}/pod-resources
            type: DirectoryOrCreate
        - name: plugins-registry
          hostPath:
            path: {{ $root }}/plugins_registry
            type: DirectoryOrCreate
        - name: plugin-dir
          hostPath:
            path: {{ $root }}/plugins/hostpath-device.k8s.io
            type: DirectoryOrCreate
        - name: cdi
          hostPath:
            path: {{ $v.kubelet.cdiDir }}
            type: DirectoryOrCreate
        - name: host-root
          hostPath:
            path: /
            type: Directory
        - name: config
          configMap:
            name: hostpath-device-plugin-config
{{- end }}
