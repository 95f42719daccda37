{{/*
The GrantGate sidecar for training jobs.

  {{- $job := include "my.job" . | fromYaml }}
  {{ include "grantgate.injectSidecar" (dict "root" . "job" $job) }}

"grantgate.injectSidecar" takes a Job (or any object with spec.template.spec) as a dict and returns it
with: the sidecar as a native sidecar (an init container with restartPolicy Always, Kubernetes >= 1.29,
so the Job still completes when its main container exits), a projected service-account token for the
gateway's audience, and in every container AWS_ENDPOINT_URL_S3 pointing at the sidecar plus placeholder
credentials. The job's own code needs no change: boto3, the aws cli and most SDKs honour those variables.
*/}}

{{- define "grantgate.sidecar.container" -}}
{{- $root := . -}}
{{- $port := int .Values.sidecar.port -}}
name: grantgate-sidecar
image: {{ include "grantgate.image" $root }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
restartPolicy: Always
args:
  - sidecar
  - --gateway
  - {{ include "grantgate.s3Url" $root }}
  - --token-file
  - {{ printf "%s/token" .Values.sidecar.tokenPath }}
  - --listen
  - {{ printf "127.0.0.1:%d" $port }}
env:
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
volumeMounts:
  - name: grantgate-token
    mountPath: {{ .Values.sidecar.tokenPath }}
    readOnly: true
# The sidecar listens on loopback only, which the kubelet's HTTP probes cannot reach: probe from inside.
startupProbe:
  exec:
    command:
      - python
      - -c
      - {{ printf "import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/_grantgate/healthz', timeout=2)" $port | quote }}
  periodSeconds: 1
  failureThreshold: 30
resources:
  {{- toYaml .Values.sidecar.resources | nindent 2 }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end }}

{{- define "grantgate.sidecar.volume" -}}
name: grantgate-token
projected:
  sources:
    - serviceAccountToken:
        audience: {{ .Values.workloadIdentity.audience }}
        expirationSeconds: {{ int .Values.sidecar.tokenExpirationSeconds }}
        path: token
{{- end }}

{{- define "grantgate.sidecar.jobEnv" -}}
- name: AWS_ENDPOINT_URL_S3
  value: {{ printf "http://127.0.0.1:%d" (int .Values.sidecar.port) }}
- name: AWS_ACCESS_KEY_ID
  value: placeholder
- name: AWS_SECRET_ACCESS_KEY
  value: placeholder
- name: AWS_REGION
  value: {{ .Values.upstream.region }}
{{- end }}

{{- define "grantgate.injectSidecar" -}}
{{- $root := .root -}}
{{- $job := deepCopy .job -}}
{{- $pod := $job.spec.template.spec -}}
{{- $sidecar := include "grantgate.sidecar.container" $root | fromYaml -}}
{{- $_ := set $pod "initContainers" (append ($pod.initContainers | default list) $sidecar) -}}
{{- $volume := include "grantgate.sidecar.volume" $root | fromYaml -}}
{{- $_ := set $pod "volumes" (append ($pod.volumes | default list) $volume) -}}
{{- $env := include "grantgate.sidecar.jobEnv" $root | fromYamlArray -}}
{{- range $pod.containers -}}
{{- $_ := set . "env" (concat (.env | default list) $env) -}}
{{- end -}}
{{- toYaml $job -}}
{{- end }}
