{{/* The release's base name: <release>-tally, or the release name when it already says tally. */}}
{{- define "tally.fullname" -}}
{{- if contains "tally" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-tally" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; `component` is ingest, projector or query (or empty). */}}
{{- define "tally.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "tally.selectorLabels" . }}
{{- end -}}

{{- define "tally.selectorLabels" -}}
app.kubernetes.io/name: tally
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "tally.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}

{{- define "tally.secretName" -}}
{{- .Values.scylla.existingSecret | default (printf "%s-scylla" (include "tally.fullname" .)) -}}
{{- end -}}

{{/* The services: their subcommand, their port (health, and what they serve) and own settings. */}}
{{- define "tally.components" -}}
ingest:
  command: ingest
  port: 8080
  # The gRPC API's commands (tally.v1.Commands, reflection, health, grpc-web).
  grpcPort: 8083
  env:
    TALLY_HTTP_WAIT_MS: {{ .Values.ingest.httpWaitMs | quote }}
    TALLY_STATE_WINDOW: {{ .Values.ingest.stateWindow | int64 | quote }}
    TALLY_GRPC_LISTEN: "0.0.0.0:8083"
projector:
  command: project
  port: 8081
  env:
    TALLY_PROJECTOR_BATCH_MAX: {{ .Values.projector.batchMax | quote }}
    # The query service answers queries; the projector's own copy stays inside the pod.
    TALLY_QUERY_LISTEN: "127.0.0.1:8082"
query:
  command: query
  port: 8082
  # The gRPC API's queries (tally.v1.Queries, reflection, health, grpc-web).
  grpcPort: 8084
  env:
    TALLY_GRPC_LISTEN: "0.0.0.0:8084"
    TALLY_QUERY_POSITION_WAIT_MS: {{ .Values.query.positionWaitMs | quote }}
    TALLY_QUERY_FOLLOW_POLL_MS: {{ .Values.query.followPollMs | quote }}
{{- end -}}

{{/* Where every container gets its settings: the ConfigMap, and the credentials' Secret. */}}
{{- define "tally.envFrom" -}}
- configMapRef:
    name: {{ include "tally.fullname" . }}
- secretRef:
    name: {{ include "tally.secretName" . }}
{{- end -}}

{{- define "tally.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The credential files a service reads (mounted whole, so Secret and ConfigMap updates reach
the files and Tally reloads them): API keys, the policy, for ingest the producer allow-list,
and the TLS certificate. Each template renders a YAML list, possibly empty. */}}
{{- define "tally.authFiles" -}}
{{- $auth := .root.Values.auth -}}
{{- if $auth.apiKeysSecret }}
- { name: api-keys, path: /etc/tally/api-keys, secret: {{ $auth.apiKeysSecret | quote }} }
{{- end }}
{{- if $auth.policyConfigMap }}
- { name: policy, path: /etc/tally/policy, configMap: {{ $auth.policyConfigMap | quote }} }
{{- end }}
{{- if and (eq .component "ingest") $auth.producerAllowListConfigMap }}
- { name: producers, path: /etc/tally/producers, configMap: {{ $auth.producerAllowListConfigMap | quote }} }
{{- end }}
{{- with .root.Values.tls.existingSecret }}
- { name: tls, path: /etc/tally/tls, secret: {{ . | quote }} }
{{- end }}
{{- end -}}

{{/* HTTP or HTTPS, for probes and scrapes. */}}
{{- define "tally.scheme" -}}
{{- if .Values.tls.existingSecret }}HTTPS{{ else }}HTTP{{ end -}}
{{- end -}}

{{- define "tally.authMounts" -}}
{{- $files := include "tally.authFiles" . | fromYamlArray -}}
{{- if $files }}
{{- range $files }}
- name: {{ .name }}
  mountPath: {{ .path }}
  readOnly: true
{{- end }}
{{- else }}
[]
{{- end }}
{{- end -}}

{{- define "tally.authVolumes" -}}
{{- $files := include "tally.authFiles" . | fromYamlArray -}}
{{- if $files }}
{{- range $files }}
- name: {{ .name }}
  {{- if .secret }}
  secret: { secretName: {{ .secret }} }
  {{- else }}
  configMap: { name: {{ .configMap }} }
  {{- end }}
{{- end }}
{{- else }}
[]
{{- end }}
{{- end -}}
