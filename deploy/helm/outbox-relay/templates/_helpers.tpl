{{- define "outbox-relay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "outbox-relay.fullname" -}}
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

{{- define "outbox-relay.selectorLabels" -}}
app.kubernetes.io/name: {{ include "outbox-relay.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "outbox-relay.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "outbox-relay.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "outbox-relay.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "outbox-relay.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
seconds turns a Go duration of h, m, s and ms parts ("30s", "1m30s", "500ms") into whole
seconds, rounded up; anything else fails the render with the value named.
*/}}
{{- define "outbox-relay.seconds" -}}
{{- $d := toString . -}}
{{- if not (regexMatch "^([0-9]+(\\.[0-9]+)?(h|m|s|ms))+$" $d) -}}
{{- fail (printf "config.shutdown-timeout %q: write it as a Go duration of h, m, s or ms parts, e.g. 30s or 1m30s" $d) -}}
{{- end -}}
{{- $ms := 0.0 -}}
{{- range regexFindAll "[0-9.]+(h|ms|m|s)" $d -1 -}}
{{- $n := regexFind "^[0-9.]+" . | float64 -}}
{{- $u := trimPrefix (regexFind "^[0-9.]+" .) . -}}
{{- if eq $u "h" }}{{ $ms = addf $ms (mulf $n 3600000) }}{{ end -}}
{{- if eq $u "m" }}{{ $ms = addf $ms (mulf $n 60000) }}{{ end -}}
{{- if eq $u "s" }}{{ $ms = addf $ms (mulf $n 1000) }}{{ end -}}
{{- if eq $u "ms" }}{{ $ms = addf $ms $n }}{{ end -}}
{{- end -}}
{{- ceil (divf $ms 1000) | int -}}
{{- end }}

{{/* grace is terminationGracePeriodSeconds: above shutdown-timeout, or refused. */}}
{{- define "outbox-relay.grace" -}}
{{- $shutdown := include "outbox-relay.seconds" (index .Values.config "shutdown-timeout" | default "30s") | int -}}
{{- $grace := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $grace -}}
{{- add $shutdown 15 -}}
{{- else if le (int $grace) $shutdown -}}
{{- fail (printf "terminationGracePeriodSeconds %v is not above config.shutdown-timeout (%d s): Kubernetes would kill the relay while it drains in-flight acks; raise it (or leave it empty for shutdown-timeout + 15 s)" $grace $shutdown) -}}
{{- else -}}
{{- int $grace -}}
{{- end -}}
{{- end }}

{{/*
relayConfig is the --config file: values.config plus what the chart decides (the listen
address, the TLS file paths). Secrets in values.config are refused.
*/}}
{{- define "outbox-relay.relayConfig" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- range $k := list "pg-url" "kafka-sasl-password" "kafka-tls-ca" "kafka-tls-cert" "kafka-tls-key" "encryption-keys" "accept-gap" "metrics-addr" "config" -}}
{{- if hasKey $cfg $k -}}
{{- if or (eq $k "pg-url") (eq $k "kafka-sasl-password") -}}
{{- fail (printf "config.%s: secrets come from Kubernetes Secrets only; set secrets.%s.name (and .key) instead" $k (ternary "pgURL" "kafkaSASLPassword" (eq $k "pg-url"))) -}}
{{- else if eq $k "encryption-keys" -}}
{{- fail "config.encryption-keys: the key file comes from a Kubernetes Secret; set secrets.encryptionKeys.secretName (and .key) instead" -}}
{{- else if hasPrefix "kafka-tls-" $k -}}
{{- fail (printf "config.%s: TLS files come from a Kubernetes Secret; set secrets.kafkaTLS.secretName and its keys instead" $k) -}}
{{- else if eq $k "accept-gap" -}}
{{- fail "config.accept-gap: the relay takes this consent from its command line only, once; see docs/operations.md, 'Gap report'" -}}
{{- else -}}
{{- fail (printf "config.%s: the chart sets it (metrics-addr from service.port)" $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* An empty --preset is refused (it lists the presets): "" means none. */ -}}
{{- if and (hasKey $cfg "preset") (eq (toString (get $cfg "preset")) "") -}}
{{- $_ := unset $cfg "preset" -}}
{{- end -}}
{{- $_ := set $cfg "metrics-addr" (printf "0.0.0.0:%v" .Values.service.port) -}}
{{- with .Values.secrets.kafkaTLS -}}
{{- if .secretName -}}
{{- $_ := set $cfg "kafka-tls" true -}}
{{- if .caKey }}{{ $_ := set $cfg "kafka-tls-ca" "/etc/outbox-relay/kafka-tls/ca" }}{{ end -}}
{{- if .certKey }}{{ $_ := set $cfg "kafka-tls-cert" "/etc/outbox-relay/kafka-tls/cert" }}{{ end -}}
{{- if .keyKey }}{{ $_ := set $cfg "kafka-tls-key" "/etc/outbox-relay/kafka-tls/key" }}{{ end -}}
{{- end -}}
{{- end -}}
{{- if .Values.secrets.encryptionKeys.secretName -}}
{{- $_ := set $cfg "encryption-keys" "/etc/outbox-relay/encryption/keys" -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end }}
