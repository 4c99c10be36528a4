{{/* Names and labels ------------------------------------------------------------------------------------- */}}

{{- define "ociregistry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ociregistry.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "ociregistry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ociregistry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ociregistry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ociregistry.labels" -}}
helm.sh/chart: {{ include "ociregistry.chart" . }}
{{ include "ociregistry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ociregistry
{{- end -}}

{{- define "ociregistry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ociregistry.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ociregistry.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "ociregistry.helperImage" -}}
{{- printf "%s:%s" .Values.helperImage.repository .Values.helperImage.tag -}}
{{- end -}}

{{/* Paths inside the pod ------------------------------------------------------------------------------------ */}}
{{- define "ociregistry.configPath" -}}/etc/ociregistry/config.yaml{{- end -}}
{{- define "ociregistry.dataDir" -}}/var/lib/ociregistry{{- end -}}
{{- define "ociregistry.secretsDir" -}}/etc/ociregistry/secrets{{- end -}}
{{- define "ociregistry.tlsDir" -}}/etc/ociregistry/tls{{- end -}}
{{- define "ociregistry.s3Dir" -}}/etc/ociregistry/s3{{- end -}}

{{/* The persistence type in force: the mode's default when persistence.type is empty. */}}
{{- define "ociregistry.persistenceType" -}}
{{- if .Values.persistence.type -}}
{{- .Values.persistence.type -}}
{{- else if eq .Values.mode "daemonset" -}}
hostPath
{{- else if .Values.s3.enabled -}}
emptyDir
{{- else -}}
pvc
{{- end -}}
{{- end -}}

{{/* The Secret key prefix of one registry: its name with ':' replaced by '_' (Secret keys allow [-._a-zA-Z0-9]). */}}
{{- define "ociregistry.registryKey" -}}
{{- . | replace ":" "_" -}}
{{- end -}}

{{/* Name of the Secret with the upstream credentials: existingSecret, or the chart's own. */}}
{{- define "ociregistry.secretName" -}}
{{- default (printf "%s-upstreams" (include "ociregistry.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{/* Name of the server TLS Secret: serverTls.secretName, or the chart's own. */}}
{{- define "ociregistry.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "ociregistry.fullname" .)) .Values.serverTls.secretName -}}
{{- end -}}

{{/* Name of the Secret with the bucket's credentials: s3.existingSecret, or the chart's own. */}}
{{- define "ociregistry.s3SecretName" -}}
{{- default (printf "%s-s3" (include "ociregistry.fullname" .)) .Values.s3.existingSecret -}}
{{- end -}}

{{/*
Data of the chart's S3 Secret as YAML (key: base64 value): access-key-id, secret-access-key and, with s3.ca,
ca.crt. Empty unless s3.enabled without s3.existingSecret.
*/}}
{{- define "ociregistry.s3SecretData" -}}
{{- $s := .Values.s3 -}}
{{- if and $s.enabled (not $s.existingSecret) -}}
{{- $data := dict "access-key-id" ($s.accessKeyId | toString | b64enc) "secret-access-key" ($s.secretAccessKey | toString | b64enc) -}}
{{- if $s.ca }}{{ $_ := set $data "ca.crt" ($s.ca | b64enc) }}{{ end -}}
{{- toYaml $data -}}
{{- end -}}
{{- end -}}

{{/*
Data of the chart's upstream Secret as YAML (key: base64 value), from the inline passwords and PEM texts of
.Values.registries. Empty when there are none.
*/}}
{{- define "ociregistry.secretData" -}}
{{- $data := dict -}}
{{- range $r := .Values.registries -}}
{{- $key := include "ociregistry.registryKey" $r.name -}}
{{- if and (kindIs "map" $r.auth) (hasKey $r.auth "password") -}}
{{- $_ := set $data (printf "%s-password" $key) ($r.auth.password | toString | b64enc) -}}
{{- end -}}
{{- if kindIs "map" $r.tls -}}
{{- if $r.tls.ca }}{{ $_ := set $data (printf "%s-ca.crt" $key) ($r.tls.ca | b64enc) }}{{ end -}}
{{- if $r.tls.cert }}{{ $_ := set $data (printf "%s-client.crt" $key) ($r.tls.cert | b64enc) }}{{ end -}}
{{- if $r.tls.key }}{{ $_ := set $data (printf "%s-client.key" $key) ($r.tls.key | b64enc) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- if $data -}}
{{- toYaml $data -}}
{{- end -}}
{{- end -}}

{{/* Whether the upstream secrets volume is mounted: an existingSecret, or inline material. */}}
{{- define "ociregistry.hasSecrets" -}}
{{- if or .Values.existingSecret (include "ociregistry.secretData" .) -}}true{{- end -}}
{{- end -}}

{{/*
The server's config file (ociregistry serve --config-file), as YAML. Keys come from the chart's values; the
free-form .Values.config is merged last. Credentials are never written here: passwords and PEM files are
referenced by path (password_file, ca_file, ...) under the mounted Secret.
*/}}
{{- define "ociregistry.serverConfig" -}}
{{- $v := .Values -}}
{{- $secretsDir := include "ociregistry.secretsDir" . -}}
{{- $tlsDir := include "ociregistry.tlsDir" . -}}
{{- $cfg := dict -}}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int $v.containerPort)) -}}
{{- $_ := set $cfg "data_dir" (include "ociregistry.dataDir" .) -}}
{{- $_ := set $cfg "log_level" $v.logLevel -}}
{{- $_ := set $cfg "log_format" $v.logFormat -}}
{{- $_ := set $cfg "default_registry" $v.defaultRegistry -}}
{{- $_ := set $cfg "air_gapped" $v.airGapped -}}
{{- $_ := set $cfg "unlisted_upstreams" $v.unlistedUpstreams -}}
{{- if $v.allowedUpstreams -}}
{{- $_ := set $cfg "allowed_upstreams" $v.allowedUpstreams -}}
{{- end -}}
{{- /* tiered caches: mirror_fallback only when it matters (mirrors set, or fallback turned off) */ -}}
{{- if $v.mirrors -}}
{{- $_ := set $cfg "mirrors" $v.mirrors -}}
{{- end -}}
{{- if or $v.mirrors (not $v.mirrorFallback) -}}
{{- $_ := set $cfg "mirror_fallback" $v.mirrorFallback -}}
{{- end -}}
{{- /* registries */ -}}
{{- $regs := list -}}
{{- range $r := $v.registries -}}
{{- $key := include "ociregistry.registryKey" $r.name -}}
{{- $out := dict -}}
{{- range $k, $x := $r -}}
{{- if not (has $k (list "auth" "tls")) -}}
{{- $_ := set $out $k $x -}}
{{- end -}}
{{- end -}}
{{- if kindIs "string" $r.auth -}}
{{- $_ := set $out "auth" $r.auth -}}
{{- else if kindIs "map" $r.auth -}}
{{- $a := dict "username" $r.auth.username -}}
{{- $sources := 0 -}}
{{- if hasKey $r.auth "password" }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $r.auth.password_file }}{{ $sources = add1 $sources }}{{ end -}}
{{- if $r.auth.password_env }}{{ $sources = add1 $sources }}{{ end -}}
{{- if gt $sources 1 -}}
{{- fail (printf "registries: %s: auth takes one of password, password_file, password_env" $r.name) -}}
{{- end -}}
{{- if hasKey $r.auth "password" -}}
{{- if $v.existingSecret -}}
{{- fail (printf "registries: %s: auth.password is given inline, but existingSecret is set: put the password into that Secret as %s-password and leave auth.password out" $r.name $key) -}}
{{- end -}}
{{- $_ := set $a "password_file" (printf "%s/%s-password" $secretsDir $key) -}}
{{- else if $r.auth.password_file -}}
{{- $_ := set $a "password_file" $r.auth.password_file -}}
{{- else if $r.auth.password_env -}}
{{- $_ := set $a "password_env" $r.auth.password_env -}}
{{- else if $v.existingSecret -}}
{{- $_ := set $a "password_file" (printf "%s/%s-password" $secretsDir $key) -}}
{{- else -}}
{{- fail (printf "registries: %s: auth needs password, password_file or password_env (or existingSecret with the key %s-password)" $r.name $key) -}}
{{- end -}}
{{- $_ := set $out "auth" $a -}}
{{- end -}}
{{- if kindIs "map" $r.tls -}}
{{- $t := dict -}}
{{- if and $v.existingSecret (or $r.tls.ca $r.tls.cert $r.tls.key) -}}
{{- fail (printf "registries: %s: tls.ca/cert/key are given inline, but existingSecret is set: name the files in that Secret with tls.ca_file/cert_file/key_file (%s/<key>)" $r.name $secretsDir) -}}
{{- end -}}
{{- if $r.tls.ca }}{{ $_ := set $t "ca_file" (printf "%s/%s-ca.crt" $secretsDir $key) }}{{ else if $r.tls.ca_file }}{{ $_ := set $t "ca_file" $r.tls.ca_file }}{{ end -}}
{{- if $r.tls.cert }}{{ $_ := set $t "cert_file" (printf "%s/%s-client.crt" $secretsDir $key) }}{{ else if $r.tls.cert_file }}{{ $_ := set $t "cert_file" $r.tls.cert_file }}{{ end -}}
{{- if $r.tls.key }}{{ $_ := set $t "key_file" (printf "%s/%s-client.key" $secretsDir $key) }}{{ else if $r.tls.key_file }}{{ $_ := set $t "key_file" $r.tls.key_file }}{{ end -}}
{{- if hasKey $r.tls "insecure_skip_verify" }}{{ $_ := set $t "insecure_skip_verify" $r.tls.insecure_skip_verify }}{{ end -}}
{{- $_ := set $out "tls" $t -}}
{{- end -}}
{{- $regs = append $regs $out -}}
{{- end -}}
{{- if $regs -}}
{{- $_ := set $cfg "registries" $regs -}}
{{- end -}}
{{- /* server TLS */ -}}
{{- if $v.serverTls.enabled -}}
{{- if and (not $v.serverTls.secretName) (or (not $v.serverTls.cert) (not $v.serverTls.key)) -}}
{{- fail "serverTls.enabled needs serverTls.cert and serverTls.key (--set-file serverTls.cert=tls.crt --set-file serverTls.key=tls.key), or serverTls.secretName" -}}
{{- end -}}
{{- $st := dict "cert_file" (printf "%s/tls.crt" $tlsDir) "key_file" (printf "%s/tls.key" $tlsDir) -}}
{{- if eq $v.serverTls.clientAuth "none" -}}
{{- $_ := set $st "client_auth" "none" -}}
{{- else -}}
{{- if and (not $v.serverTls.secretName) (not $v.serverTls.ca) -}}
{{- fail (printf "serverTls.clientAuth %s needs serverTls.ca (--set-file serverTls.ca=ca.crt) or ca.crt in serverTls.secretName" $v.serverTls.clientAuth) -}}
{{- end -}}
{{- $_ := set $st "client_ca_file" (printf "%s/ca.crt" $tlsDir) -}}
{{- $_ := set $st "client_auth" (ternary "require" "optional" (eq $v.serverTls.clientAuth "verify")) -}}
{{- end -}}
{{- $_ := set $cfg "server_tls" $st -}}
{{- end -}}
{{- /* metrics, pruning, disk */ -}}
{{- if $v.metrics.port -}}
{{- $_ := set $cfg "metrics" (int $v.metrics.port) -}}
{{- end -}}
{{- if $v.pruning.olderThan -}}
{{- $_ := set $cfg "prune_older_than" $v.pruning.olderThan -}}
{{- end -}}
{{- $_ := set $cfg "prune_interval" $v.pruning.interval -}}
{{- if $v.maxCacheBytes -}}
{{- $_ := set $cfg "max_cache_bytes" $v.maxCacheBytes -}}
{{- end -}}
{{- $_ := set $cfg "min_free_bytes" $v.minFreeBytes -}}
{{- /* scale-out: the shared bucket; credentials as files of the mounted S3 Secret, replica_id left to the
host name (a pod's host name is its name) */ -}}
{{- if $v.s3.enabled -}}
{{- $s := $v.s3 -}}
{{- $s3Dir := include "ociregistry.s3Dir" . -}}
{{- $o := dict "endpoint" $s.endpoint "bucket" $s.bucket "region" $s.region "path_style" $s.pathStyle "local_tier" $s.localTier "refs_interval" $s.refsInterval "timeout" $s.timeout -}}
{{- if $s.prefix }}{{ $_ := set $o "prefix" $s.prefix }}{{ end -}}
{{- $_ := set $o "access_key_id_file" (printf "%s/access-key-id" $s3Dir) -}}
{{- $_ := set $o "secret_access_key_file" (printf "%s/secret-access-key" $s3Dir) -}}
{{- if $s.ca }}{{ $_ := set $o "ca_file" (printf "%s/ca.crt" $s3Dir) }}{{ else if $s.caFile }}{{ $_ := set $o "ca_file" $s.caFile }}{{ end -}}
{{- $_ := set $cfg "s3" $o -}}
{{- end -}}
{{- $cfg = mergeOverwrite $cfg (deepCopy $v.config) -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Probe scheme: HTTPS when the server speaks TLS. */}}
{{- define "ociregistry.scheme" -}}
{{- if .Values.serverTls.enabled -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{/* The node port containerd on a node talks to in mode daemonset (hostNetwork: containerPort). */}}
{{- define "ociregistry.nodeLocalPort" -}}
{{- if .Values.daemonset.hostNetwork -}}
{{- .Values.containerPort -}}
{{- else -}}
{{- .Values.daemonset.hostPort -}}
{{- end -}}
{{- end -}}
