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
{{- if and .Values.observability.enabled (not .Values.metrics.port) -}}
{{- fail "observability.enabled needs metrics.port (the ServiceMonitor scrapes it)" -}}
{{- end -}}
{{- if and .Values.metrics.port (eq (int .Values.metrics.port) (int .Values.containerPort)) -}}
{{- fail "metrics.port must differ from containerPort" -}}
{{- end -}}
{{- end -}}
