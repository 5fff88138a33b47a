{{/* The chart name, overridable with nameOverride. */}}
{{- define "gamification-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects (DNS label, at most 63 characters). */}}
{{- define "gamification-operator.fullname" -}}
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

{{/* chart label value: name-version */}}
{{- define "gamification-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "gamification-operator.labels" -}}
helm.sh/chart: {{ include "gamification-operator.chart" . }}
{{ include "gamification-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gamify
{{- end }}

{{/* Labels that select the operator pods (never change: a Deployment selector is immutable). */}}
{{- define "gamification-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gamification-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "gamification-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gamification-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "gamification-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Kopf peering: only with more than one replica. */}}
{{- define "gamification-operator.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{- end }}
{{- end }}

{{- define "gamification-operator.peeringName" -}}
{{- default (include "gamification-operator.fullname" .) .Values.peeringName }}
{{- end }}
