{{/* Names, labels and the generated gateway configuration. */}}

{{- define "grantgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "grantgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "grantgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "grantgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "grantgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "grantgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "grantgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "grantgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "grantgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "grantgate.secretName" -}}
{{- default (printf "%s-secret-key" (include "grantgate.fullname" .)) .Values.secretKey.existingSecret }}
{{- end }}

{{- define "grantgate.metricsSecretName" -}}
{{- default (printf "%s-metrics-token" (include "grantgate.fullname" .)) .Values.metrics.token.existingSecret }}
{{- end }}

{{/* The S3 endpoint inside the cluster: what sidecars and in-cluster clients use. */}}
{{- define "grantgate.s3Url" -}}
{{- printf "http://%s-s3.%s.svc:%d" (include "grantgate.fullname" .) .Release.Namespace (int .Values.ports.s3) }}
{{- end }}

{{- define "grantgate.sqlite" -}}
{{- if and (not .Values.store.existingSecret) (hasPrefix "sqlite" .Values.store.url) }}true{{ end }}
{{- end }}

{{/* config.toml: the user's `config` values, with listeners, store, upstream and sts set from the chart. */}}
{{- define "grantgate.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $server := get $cfg "server" | default dict }}
{{- $_ := set $server "s3_host" "0.0.0.0" }}
{{- $_ := set $server "s3_port" (int .Values.ports.s3) }}
{{- $_ := set $server "control_host" "0.0.0.0" }}
{{- $_ := set $server "control_port" (int .Values.ports.control) }}
{{- $_ := set $server "public_url" (default (printf "http://%s-control.%s.svc:%d" (include "grantgate.fullname" .) .Release.Namespace (int .Values.ports.control)) .Values.publicUrl) }}
{{- $_ := set $cfg "server" $server }}
{{- $upstream := get $cfg "upstream" | default dict }}
{{- $_ := set $upstream "endpoint_url" .Values.upstream.endpointUrl }}
{{- $_ := set $upstream "region" .Values.upstream.region }}
{{- $_ := set $cfg "upstream" $upstream }}
{{- if not .Values.store.existingSecret }}
{{- $_ := set $cfg "store" (dict "url" .Values.store.url) }}
{{- end }}
{{- with .Values.workloadIdentity }}
{{- if .enabled }}
{{- $issuer := dict "issuer" .issuer "audiences" (list .audience) "jwks_url" .jwksUrl "jwks_ca_file" "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt" "jwks_token_file" "/var/run/secrets/kubernetes.io/serviceaccount/token" }}
{{- $rules := list }}
{{- range .rules }}
{{- $rules = append $rules (merge (dict "issuer" $.Values.workloadIdentity.issuer) (deepCopy .)) }}
{{- end }}
{{- $_ := set $cfg "sts" (dict "enabled" true "max_session_seconds" (int .maxSessionSeconds) "default_session_seconds" (int .maxSessionSeconds) "issuers" (list $issuer) "rules" $rules) }}
{{- end }}
{{- end }}
{{- toToml $cfg }}
{{- end }}

{{- define "grantgate.storeEnv" -}}
{{- with .Values.store.existingSecret }}
- name: GRANTGATE_STORE_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.store.key }}
{{- end }}
{{- end }}
