{{/*
The chart name, or nameOverride.
*/}}
{{- define "matte.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name that prefixes every resource: fullnameOverride, else the release name when
it already contains the chart name, else "<release>-<chart>". At most 63 characters.
*/}}
{{- define "matte.fullname" -}}
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

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "matte.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the operator's pods. The component label keeps them apart from the
inference pods the operator creates, whatever those are labelled.
*/}}
{{- define "matte.selectorLabels" -}}
app.kubernetes.io/name: {{ include "matte.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels on every resource of the chart.
*/}}
{{- define "matte.labels" -}}
helm.sh/chart: {{ include "matte.chart" . }}
{{ include "matte.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: matte
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The operator's ServiceAccount.
*/}}
{{- define "matte.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "matte.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image: repository and tag, or repository@digest for a sha256: tag.
*/}}
{{- define "matte.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The default inference image passed to --default-inference-image.
*/}}
{{- define "matte.inferenceImage" -}}
{{- default (printf "localhost/matte-inference:%s" .Chart.AppVersion) .Values.inference.defaultImage }}
{{- end }}

{{/*
The default gateway image: the one scripts/images/build.sh tags, unless set.
*/}}
{{- define "matte.gatewayImage" -}}
{{- default (printf "localhost/matte-gateway:%s" .Chart.AppVersion) .Values.gateway.defaultImage }}
{{- end }}

{{/*
The leader-election Lease's name.
*/}}
{{- define "matte.leaseName" -}}
{{- default (printf "%s-leader" (include "matte.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Operator pods to run: without leader election never more than one.
*/}}
{{- define "matte.replicas" -}}
{{- if .Values.leaderElection.enabled }}
{{- .Values.replicaCount }}
{{- else }}
{{- min .Values.replicaCount 1 }}
{{- end }}
{{- end }}

{{/*
A map as comma-separated key=value pairs, sorted by key.
*/}}
{{- define "matte.keyValues" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
