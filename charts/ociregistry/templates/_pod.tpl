{{/* The pod template shared by the Deployment and the DaemonSet. */}}
{{- define "ociregistry.probeAction" -}}
{{- $root := index . 0 -}}
{{- $path := index . 1 -}}
{{- if and $root.Values.serverTls.enabled (eq $root.Values.serverTls.clientAuth "verify") -}}
tcpSocket:
  port: http
{{- else -}}
httpGet:
  path: {{ $path }}
  port: http
  scheme: {{ include "ociregistry.scheme" $root | upper }}
{{- end -}}
{{- end -}}

{{- define "ociregistry.podTemplate" -}}
{{- $ptype := include "ociregistry.persistenceType" . -}}
{{- $daemon := eq .Values.mode "daemonset" -}}
metadata:
  labels:
    {{- include "ociregistry.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "ociregistry.serverConfig" . | sha256sum }}
    {{- if include "ociregistry.secretData" . }}
    checksum/secret: {{ include "ociregistry.secretData" . | sha256sum }}
    {{- end }}
    {{- if include "ociregistry.s3SecretData" . }}
    checksum/s3-secret: {{ include "ociregistry.s3SecretData" . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "ociregistry.serviceAccountName" . }}
  automountServiceAccountToken: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if and $daemon .Values.daemonset.hostNetwork }}
  hostNetwork: true
  dnsPolicy: ClusterFirstWithHostNet
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  {{- $chown := and (eq $ptype "hostPath") .Values.persistence.hostPath.chown }}
  {{- $configurator := and $daemon .Values.containerdConfigurator.enabled }}
  {{- if or $chown $configurator }}
  initContainers:
    {{- if $chown }}
    # The node directory belongs to whoever created it (kubelet: root); the server runs as
    # {{ .Values.podSecurityContext.runAsUser }}:{{ .Values.podSecurityContext.runAsGroup }}. Recursive only when the top directory is not the server's yet.
    - name: volume-permissions
      image: {{ include "ociregistry.helperImage" . }}
      imagePullPolicy: {{ .Values.helperImage.pullPolicy }}
      command:
        - sh
        - -c
        - |
          set -eu
          owner="{{ .Values.podSecurityContext.runAsUser }}:{{ .Values.podSecurityContext.runAsGroup }}"
          if [ "$(stat -c %u:%g "$DATA_DIR")" != "$owner" ]; then
            chown -R "$owner" "$DATA_DIR"
            echo "gave $DATA_DIR to $owner"
          fi
      env:
        - name: DATA_DIR
          value: {{ include "ociregistry.dataDir" . }}
      securityContext:
        runAsUser: 0
        runAsGroup: 0
        runAsNonRoot: false
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop:
            - ALL
          add:
            - CHOWN
            - DAC_READ_SEARCH
      resources:
        {{- toYaml .Values.initResources | nindent 8 }}
      volumeMounts:
        - name: data
          mountPath: {{ include "ociregistry.dataDir" . }}
    {{- end }}
    {{- if $configurator }}
    # Writes hosts.toml for containerd on this node: pulls go to this node's cache first, the upstream after.
    - name: containerd-configurator
      image: {{ include "ociregistry.helperImage" . }}
      imagePullPolicy: {{ .Values.helperImage.pullPolicy }}
      command:
        - sh
        - -c
        - |
          set -eu
          case "$HOST_IP" in *:*) host="[$HOST_IP]" ;; *) host="$HOST_IP" ;; esac
          for r in $REGISTRIES; do
            d="$CERTS_DIR/$r"
            f="$d/hosts.toml"
            if [ -e "$f" ] && [ "$OVERWRITE" != "true" ]; then
              echo "keeping $f"
              continue
            fi
            mkdir -p "$d"
            {
              echo "# Written by the ociregistry chart ($RELEASE): pull through the cache on this node."
              echo "[host.\"$SCHEME://$host:$PORT\"]"
              echo "  capabilities = [\"pull\", \"resolve\"]"
              if [ "$SKIP_VERIFY" = "true" ]; then echo "  skip_verify = true"; fi
            } >"$f.tmp"
            mv "$f.tmp" "$f"
            echo "wrote $f:"
            cat "$f"
          done
      env:
        - name: HOST_IP
          valueFrom:
            fieldRef:
              fieldPath: status.hostIP
        - name: CERTS_DIR
          value: /host/certs.d
        - name: REGISTRIES
          value: {{ join " " .Values.containerdConfigurator.registries | quote }}
        - name: SCHEME
          value: {{ include "ociregistry.scheme" . }}
        - name: PORT
          value: {{ include "ociregistry.nodeLocalPort" . | quote }}
        - name: SKIP_VERIFY
          value: {{ and .Values.serverTls.enabled .Values.containerdConfigurator.skipVerify | quote }}
        - name: OVERWRITE
          value: {{ .Values.containerdConfigurator.overwrite | quote }}
        - name: RELEASE
          value: {{ printf "%s/%s" .Release.Namespace .Release.Name | quote }}
      securityContext:
        runAsUser: 0
        runAsGroup: 0
        runAsNonRoot: false
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop:
            - ALL
      resources:
        {{- toYaml .Values.initResources | nindent 8 }}
      volumeMounts:
        - name: containerd-certs
          mountPath: /host/certs.d
    {{- end }}
  {{- end }}
  containers:
    - name: ociregistry
      image: {{ include "ociregistry.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - serve
        - --config-file
        - {{ include "ociregistry.configPath" . }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        # `kubectl exec ... -- /ociregistry list` (and load, prune, pin, stats) read the same config file,
        # so they find the data directory and the admin socket.
        - name: OCIREGISTRY_CONFIG
          value: {{ include "ociregistry.configPath" . }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
          {{- if and $daemon (not .Values.daemonset.hostNetwork) .Values.daemonset.hostPort }}
          hostPort: {{ .Values.daemonset.hostPort }}
          {{- end }}
        {{- if .Values.metrics.port }}
        - name: metrics
          containerPort: {{ .Values.metrics.port }}
          protocol: TCP
        {{- end }}
      {{- if .Values.startupProbe.enabled }}
      startupProbe:
        {{- include "ociregistry.probeAction" (list . "/healthz") | nindent 8 }}
        periodSeconds: {{ .Values.startupProbe.periodSeconds }}
        failureThreshold: {{ .Values.startupProbe.failureThreshold }}
      {{- end }}
      {{- if .Values.livenessProbe.enabled }}
      livenessProbe:
        {{- include "ociregistry.probeAction" (list . "/healthz") | nindent 8 }}
        periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
        timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
        failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
      {{- end }}
      {{- if .Values.readinessProbe.enabled }}
      readinessProbe:
        {{- include "ociregistry.probeAction" (list . "/readyz") | nindent 8 }}
        periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
        timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
        failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
      {{- end }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/ociregistry/config.yaml
          subPath: config.yaml
          readOnly: true
        - name: data
          mountPath: {{ include "ociregistry.dataDir" . }}
        {{- if include "ociregistry.hasSecrets" . }}
        - name: upstream-secrets
          mountPath: {{ include "ociregistry.secretsDir" . }}
          readOnly: true
        {{- end }}
        {{- if .Values.serverTls.enabled }}
        - name: server-tls
          mountPath: {{ include "ociregistry.tlsDir" . }}
          readOnly: true
        {{- end }}
        {{- if .Values.s3.enabled }}
        - name: s3-credentials
          mountPath: {{ include "ociregistry.s3Dir" . }}
          readOnly: true
        {{- end }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "ociregistry.fullname" . }}
    - name: data
      {{- if eq $ptype "pvc" }}
      persistentVolumeClaim:
        claimName: {{ default (include "ociregistry.fullname" .) .Values.persistence.existingClaim }}
      {{- else if eq $ptype "hostPath" }}
      hostPath:
        path: {{ .Values.persistence.hostPath.path }}
        type: {{ .Values.persistence.hostPath.type }}
      {{- else }}
      {{- with .Values.persistence.emptyDir.sizeLimit }}
      emptyDir:
        sizeLimit: {{ . }}
      {{- else }}
      emptyDir: {}
      {{- end }}
      {{- end }}
    {{- if include "ociregistry.hasSecrets" . }}
    - name: upstream-secrets
      secret:
        secretName: {{ include "ociregistry.secretName" . }}
        defaultMode: 0440
    {{- end }}
    {{- if .Values.serverTls.enabled }}
    # The TLS secret as a directory (not subPath): the server re-reads the files when kubelet swaps them.
    - name: server-tls
      secret:
        secretName: {{ include "ociregistry.tlsSecretName" . }}
        defaultMode: 0440
    {{- end }}
    {{- if .Values.s3.enabled }}
    # The bucket's credentials (and CA) as files: the config names them (access_key_id_file, ...), never the values.
    - name: s3-credentials
      secret:
        secretName: {{ include "ociregistry.s3SecretName" . }}
        defaultMode: 0440
    {{- end }}
    {{- if $configurator }}
    - name: containerd-certs
      hostPath:
        path: {{ .Values.containerdConfigurator.certsDir }}
        type: DirectoryOrCreate
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
