{{/* Rules values.schema.json cannot state (they span several values). */}}
{{- define "ociregistry.validate" -}}
{{- $ptype := include "ociregistry.persistenceType" . -}}
{{- $daemon := eq .Values.mode "daemonset" -}}
{{- if and $daemon (eq $ptype "pvc") -}}
{{- fail "mode daemonset cannot use persistence.type pvc (each node's server needs its own data directory): use hostPath or emptyDir" -}}
{{- end -}}
{{- if and (not $daemon) (gt (int .Values.replicaCount) 1) (ne $ptype "emptyDir") -}}
{{- fail (printf "replicaCount %d needs persistence.type emptyDir: servers cannot share one data directory (%s)" (int .Values.replicaCount) $ptype) -}}
{{- end -}}
{{- if and $daemon .Values.containerdConfigurator.enabled (not .Values.daemonset.hostNetwork) (not .Values.daemonset.hostPort) -}}
{{- fail "containerdConfigurator needs daemonset.hostPort or daemonset.hostNetwork: containerd on the node must reach the node's pod" -}}
{{- end -}}
{{- if and .Values.containerdConfigurator.enabled (not $daemon) -}}
{{- fail "containerdConfigurator works in mode daemonset only (it points each node at its own pod); in mode deployment write hosts.toml as docs/kubernetes.md shows" -}}
{{- end -}}
{{- with .Values.s3 -}}
{{- if .enabled -}}
{{- if or (not .endpoint) (not .bucket) -}}
{{- fail "s3.enabled needs s3.endpoint (http(s)://host[:port]) and s3.bucket" -}}
{{- end -}}
{{- if .existingSecret -}}
{{- if or .accessKeyId .secretAccessKey .ca -}}
{{- fail (printf "s3.existingSecret is set (%s): leave s3.accessKeyId, s3.secretAccessKey and s3.ca out (put them into that Secret as access-key-id, secret-access-key, and ca.crt with s3.caFile /etc/ociregistry/s3/ca.crt)" .existingSecret) -}}
{{- end -}}
{{- else if or (not .accessKeyId) (not .secretAccessKey) -}}
{{- fail "s3.enabled needs s3.accessKeyId and s3.secretAccessKey, or s3.existingSecret (a Secret with the keys access-key-id and secret-access-key)" -}}
{{- end -}}
{{- if and .ca .caFile -}}
{{- fail "s3.ca and s3.caFile exclude each other" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and .Values.observability.enabled (not .Values.metrics.port) -}}
{{- fail "observability.enabled needs metrics.port (the ServiceMonitor scrapes it)" -}}
{{- end -}}
{{- if and .Values.metrics.port (eq (int .Values.metrics.port) (int .Values.containerPort)) -}}
{{- fail "metrics.port must differ from containerPort" -}}
{{- end -}}
{{- end -}}
