{{/* The example training Job, before the sidecar is injected. */}}

{{- define "grantgate.exampleJob" -}}
{{- $ex := .Values.exampleJob -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "grantgate.fullname" . }}-example-training
  labels:
    {{- include "grantgate.labels" . | nindent 4 }}
    app.kubernetes.io/component: example-training
spec:
  backoffLimit: 2
  ttlSecondsAfterFinished: 3600
  template:
    metadata:
      labels:
        app.kubernetes.io/component: example-training
    spec:
      serviceAccountName: {{ $ex.serviceAccountName }}
      automountServiceAccountToken: false
      restartPolicy: Never
      securityContext:
        runAsNonRoot: true
        runAsUser: 10002
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: train
          image: {{ $ex.image }}
          command: ["/bin/sh", "-c"]
          args:
            - |
              set -e
              # Reads the weights and writes a checkpoint through the sidecar: no bucket credentials here.
              aws s3 cp "s3://{{ $ex.bucket }}/{{ $ex.modelKey }}" /tmp/model
              date > /tmp/checkpoint
              aws s3 cp /tmp/checkpoint "s3://{{ $ex.bucket }}/{{ $ex.checkpointPrefix }}step-1"
          env:
            - name: HOME
              value: /tmp
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir: {}
{{- end }}
