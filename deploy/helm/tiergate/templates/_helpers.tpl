{{- define "tiergate.fullname" -}}{{ .Release.Name }}-tiergate{{- end -}}
{{- define "tiergate.labels" -}}
app.kubernetes.io/name: tiergate
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
