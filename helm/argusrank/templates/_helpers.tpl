{{/* Release-scoped name, max 63 chars (DNS label). */}}
{{- define "argusrank.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "argusrank.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include "argusrank.selector" (list . "redis") */}}
{{- define "argusrank.selector" -}}
{{- $ctx := index . 0 -}}
app.kubernetes.io/name: {{ $ctx.Chart.Name }}
app.kubernetes.io/instance: {{ $ctx.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "argusrank.image" -}}
{{ printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end -}}

{{- define "argusrank.configPath" -}}/etc/argusrank/argusrank.yaml{{- end -}}

{{/* MLFLOW_TRACKING_URI: the chart's server, or an external one. */}}
{{- define "argusrank.trackingUri" -}}
{{- if .Values.mlflow.enabled -}}
{{ printf "http://%s-mlflow.%s.svc:%d" (include "argusrank.fullname" .) .Release.Namespace (int .Values.mlflow.port) }}
{{- else -}}
{{ .Values.mlflow.externalUri }}
{{- end -}}
{{- end -}}

{{/* Redis host:port (the chart's Redis) or redis.existingUrl (host:port[,password=...]);
the Secret's redis-url (ARGUSRANK_REDIS_URL) adds the chart's Redis password. */}}
{{- define "argusrank.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{ printf "%s-redis.%s.svc:%d" (include "argusrank.fullname" .) .Release.Namespace (int .Values.redis.port) }}
{{- else -}}
{{ .Values.redis.existingUrl }}
{{- end -}}
{{- end -}}

{{/* The four environment variables platform/config.py reads. */}}
{{- define "argusrank.env" -}}
- name: ARGUSRANK_CONFIG
  value: {{ include "argusrank.configPath" . }}
- name: ARGUSRANK_HOME
  value: {{ .Values.home.path | quote }}
{{- if include "argusrank.trackingUri" . }}
- name: MLFLOW_TRACKING_URI
  value: {{ include "argusrank.trackingUri" . | quote }}
{{- end }}
{{- if include "argusrank.redisUrl" . }}
- name: ARGUSRANK_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "argusrank.fullname" . }}
      key: redis-url
{{- end }}
{{- end -}}

{{- define "argusrank.volumeMounts" -}}
- name: config
  mountPath: /etc/argusrank
  readOnly: true
- name: home
  mountPath: {{ .Values.home.path }}
{{- end -}}

{{- define "argusrank.volumes" -}}
- name: config
  configMap:
    name: {{ include "argusrank.fullname" . }}
- name: home
{{- if .Values.home.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.home.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{/* Pod securityContext: the top-level podSecurityContext with a component's merged over it:
include "argusrank.podSecurityContext" (list . .Values.redis.podSecurityContext) */}}
{{- define "argusrank.podSecurityContext" -}}
{{- $ctx := index . 0 -}}
{{- toYaml (mustMergeOverwrite (deepCopy ($ctx.Values.podSecurityContext | default dict)) (deepCopy ((index . 1) | default dict))) -}}
{{- end -}}

{{/* Container securityContext, likewise: include "argusrank.containerSecurityContext" (list . dict) */}}
{{- define "argusrank.containerSecurityContext" -}}
{{- $ctx := index . 0 -}}
{{- toYaml (mustMergeOverwrite (deepCopy ($ctx.Values.containerSecurityContext | default dict)) (deepCopy ((index . 1) | default dict))) -}}
{{- end -}}

{{/* One Ray container (head or worker): include "argusrank.rayContainer" (dict "ctx" . "name" "ray-head" "resources" ... "head" true) */}}
{{- define "argusrank.rayContainer" -}}
{{- $ := .ctx -}}
- name: {{ .name }}
  image: {{ include "argusrank.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  env:
    {{- include "argusrank.env" $ | nindent 4 }}
  {{- with $.Values.mlflow.artifactCredentialsSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  {{- if .head }}
  ports:
    - {name: gcs-server, containerPort: 6379}
    - {name: dashboard, containerPort: 8265}
    - {name: client, containerPort: 10001}
    - {name: serve, containerPort: 8000}
  {{- end }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- include "argusrank.containerSecurityContext" (list $ dict) | nindent 4 }}
  volumeMounts:
    {{- include "argusrank.volumeMounts" $ | nindent 4 }}
{{- end -}}
