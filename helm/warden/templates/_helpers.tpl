{{/*
Names and labels.
*/}}
{{- define "warden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "warden.fullname" -}}
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

{{- define "warden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels; call with (dict "root" $ "component" "worker"). */}}
{{- define "warden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "warden.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* All labels; call with (dict "root" $ "component" "worker"), component optional. */}}
{{- define "warden.labels" -}}
helm.sh/chart: {{ include "warden.chart" .root }}
{{ include "warden.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: warden
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "warden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "warden.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference; call with (dict "root" $ "image" .Values.image). */}}
{{- define "warden.image" -}}
{{- $tag := default .root.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
A duration value ("1500ms", "30s", "5m", "2h"; the schema allows exactly these forms) as
whole seconds, rounded up.
*/}}
{{- define "warden.seconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "ms" $d -}}
{{- div (add (trimSuffix "ms" $d | int64) 999) 1000 -}}
{{- else if hasSuffix "s" $d -}}
{{- trimSuffix "s" $d | int64 -}}
{{- else if hasSuffix "m" $d -}}
{{- mul (trimSuffix "m" $d | int64) 60 -}}
{{- else if hasSuffix "h" $d -}}
{{- mul (trimSuffix "h" $d | int64) 3600 -}}
{{- else -}}
{{- fail (printf "cannot read %q as a duration (use e.g. 30s, 5m)" $d) -}}
{{- end -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds; call with
(dict "root" $ "c" .Values.worker "bound" .Values.config.taskTimeout "boundName" "config.taskTimeout").

On SIGTERM warden stops consuming and drains: in-flight work gets up to shutdownGrace, and
each piece is itself bounded (a task by config.taskTimeout, a browser login by
config.reauth.loginTimeout); then it settles (confirmed publishes, acks), closes the
connection and flushes spans. The ceiling that holds whichever of the two bounds the Rust
side hits first is

    preStopSleepSeconds + bound + shutdownGrace + terminationMarginSeconds

and it costs nothing when pods exit early: Kubernetes only waits while the process runs.
A SIGKILL before the drain ends redelivers the unfinished tasks and spends one delivery of
config.deliveryLimit on each, so an explicit override below the derived value is refused.
*/}}
{{- define "warden.terminationGracePeriod" -}}
{{- $cfg := .root.Values.config -}}
{{- $derived := add (.c.preStopSleepSeconds | int64) (include "warden.seconds" .bound | int64) (include "warden.seconds" $cfg.shutdownGrace | int64) (.c.terminationMarginSeconds | int64) -}}
{{- if kindIs "invalid" .c.terminationGracePeriodSeconds -}}
{{- $derived -}}
{{- else if lt (.c.terminationGracePeriodSeconds | int64) $derived -}}
{{- fail (printf "terminationGracePeriodSeconds %v is below preStopSleepSeconds + %s + config.shutdownGrace + terminationMarginSeconds = %v: Kubernetes would kill pods mid-drain" .c.terminationGracePeriodSeconds .boundName $derived) -}}
{{- else -}}
{{- .c.terminationGracePeriodSeconds | int64 -}}
{{- end -}}
{{- end -}}

{{/* The Secret every credential defaults to. */}}
{{- define "warden.secretName" -}}
{{- if .Values.secrets.createFromValues -}}
{{- include "warden.fullname" . -}}
{{- else -}}
{{- required "secrets.existingSecret is required (or opt in to secrets.createFromValues)" .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "warden.brokerSecretName" -}}
{{- default (include "warden.secretName" .) .Values.broker.existingSecret -}}
{{- end -}}

{{/* Cross-field checks that JSON Schema cannot express; rendered once from configmap.yaml. */}}
{{- define "warden.validate" -}}
{{- $v := .Values -}}
{{- $timeout := include "warden.seconds" $v.config.taskTimeout | int64 -}}
{{- $grace := include "warden.seconds" $v.config.shutdownGrace | int64 -}}
{{- $consumer := include "warden.seconds" $v.broker.consumerTimeout | int64 -}}
{{- $concurrency := $v.config.concurrency | int64 -}}
{{- /* The worker's default (Settings::prefetch): the slots plus a refill window of up to 256. */ -}}
{{- $prefetch := $v.config.prefetch | default (add $concurrency (min (mul 3 $concurrency) 256)) | int64 -}}
{{- if lt $prefetch $concurrency -}}
{{- fail (printf "config.prefetch (%d) must be at least config.concurrency (%d): handler slots would wait for deliveries that cannot come" $prefetch $concurrency) -}}
{{- end -}}
{{- /* A delivery beyond the handler slots waits for a slot: at worst one taskTimeout per
       full round of slots ahead of it, then its own attempt. */ -}}
{{- $rounds := div (add $prefetch (sub $concurrency 1)) $concurrency -}}
{{- $longest := add (mul $rounds $timeout) $grace 60 -}}
{{- if ge $longest $consumer -}}
{{- fail (printf "ceil(prefetch / concurrency) x config.taskTimeout + config.shutdownGrace + 60s (%ds) must stay below broker.consumerTimeout (%ds): RabbitMQ would close the channel on a delivery left unacked that long and redeliver every in-flight task of the pod; lower config.prefetch or config.taskTimeout" $longest $consumer) -}}
{{- end -}}
{{- if and $v.autoscaling.keda.enabled $v.autoscaling.hpa.enabled -}}
{{- fail "autoscaling.keda and autoscaling.hpa are mutually exclusive: KEDA creates its own HPA for the worker" -}}
{{- end -}}
{{- with $v.autoscaling.keda -}}
{{- if and .enabled (gt (.minReplicaCount | int64) (.maxReplicaCount | int64)) -}}
{{- fail (printf "autoscaling.keda.minReplicaCount (%v) is above maxReplicaCount (%v)" .minReplicaCount .maxReplicaCount) -}}
{{- end -}}
{{- end -}}
{{- with $v.autoscaling.hpa -}}
{{- if and .enabled (gt (.minReplicas | int64) (.maxReplicas | int64)) -}}
{{- fail (printf "autoscaling.hpa.minReplicas (%v) is above maxReplicas (%v)" .minReplicas .maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- if and $v.secrets.createFromValues (eq $v.tokenStore.type "postgres") (not $v.tokenStore.existingSecret) -}}
{{- $_ := required "secrets.values.tokenStoreUrl is required with secrets.createFromValues and tokenStore.type postgres" $v.secrets.values.tokenStoreUrl -}}
{{- end -}}
{{- end -}}

{{/*
Environment shared by both Deployments; call with (dict "root" $ "component" "worker").
Secrets only arrive through secretKeyRef or mounted files.
*/}}
{{- define "warden.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: WARDEN_CONFIG
  value: /etc/warden/warden.toml
- name: WARDEN_AMQP_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "warden.brokerSecretName" $root }}
      key: {{ $v.broker.urlKey }}
{{- if eq $v.tokenStore.type "postgres" }}
- name: WARDEN_TOKEN_STORE
  valueFrom:
    secretKeyRef:
      name: {{ default (include "warden.secretName" $root) $v.tokenStore.existingSecret }}
      key: {{ $v.tokenStore.urlKey }}
{{- else }}
- name: WARDEN_TOKEN_STORE
  value: sqlite:///var/lib/warden/store/warden.db
{{- end }}
- name: WARDEN_TOKEN_KEY_FILE
  value: /var/run/secrets/warden/token-key
{{- if $v.tokenKey.previousKey }}
{{- /* Key rotation: tokens written under the previous key still decrypt. */}}
- name: WARDEN_TOKEN_KEY_PREVIOUS
  valueFrom:
    secretKeyRef:
      name: {{ default (include "warden.secretName" $root) $v.tokenKey.existingSecret }}
      key: {{ $v.tokenKey.previousKey }}
{{- end }}
{{- if $v.broker.tls.existingSecret }}
- name: WARDEN_TLS__CA_FILE
  value: /var/run/secrets/warden-broker/ca.crt
{{- if $v.broker.tls.certKey }}
- name: WARDEN_TLS__CERT_FILE
  value: /var/run/secrets/warden-broker/tls.crt
- name: WARDEN_TLS__KEY_FILE
  value: /var/run/secrets/warden-broker/tls.key
{{- end }}
{{- end }}
- name: WARDEN_ADMIN_ADDR
  value: {{ printf "0.0.0.0:%d" ($v.adminPort | int64) | quote }}
{{- if eq .component "reauth" }}
- name: WARDEN_REAUTH__CHROMIUM_PATH
  value: {{ $v.config.reauth.chromiumPath | quote }}
- name: WARDEN_REAUTH__ARTIFACTS_DIR
  value: {{ $v.config.reauth.artifactsDir | quote }}
{{- end }}
- name: RUST_LOG
  value: {{ $v.config.logLevel | quote }}
{{- if $v.otel.endpointFromSecret.name }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  valueFrom:
    secretKeyRef:
      name: {{ $v.otel.endpointFromSecret.name }}
      key: {{ $v.otel.endpointFromSecret.key }}
{{- else if $v.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.otel.endpoint | quote }}
{{- else if and $v.secrets.createFromValues $v.secrets.values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  valueFrom:
    secretKeyRef:
      name: {{ include "warden.fullname" $root }}
      key: otlp-endpoint
{{- end }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $v.otel.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "warden-%s" .component | quote }}
{{- $image := ternary $v.reauth.image $v.image (eq .component "reauth") -}}
{{- $attrs := list (printf "service.version=%s" (default $root.Chart.AppVersion $image.tag)) (printf "k8s.namespace.name=%s" $root.Release.Namespace) (printf "k8s.deployment.name=%s-%s" (include "warden.fullname" $root) .component) -}}
{{- range $k, $val := $v.otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%v" $k $val) -}}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- with $v.otel.sampler }}
- name: OTEL_TRACES_SAMPLER
  value: {{ . | quote }}
{{- end }}
{{- with $v.otel.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Volumes shared by both Deployments. */}}
{{- define "warden.volumes" -}}
{{- $v := .Values -}}
- name: config
  configMap:
    name: {{ include "warden.fullname" . }}
- name: token-key
  secret:
    secretName: {{ default (include "warden.secretName" .) $v.tokenKey.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $v.tokenKey.key }}
        path: token-key
{{- with $v.broker.tls }}{{ if .existingSecret }}
- name: broker-tls
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .caKey }}
        path: ca.crt
      {{- if .certKey }}
      - key: {{ .certKey }}
        path: tls.crt
      - key: {{ required "broker.tls.keyKey is required with broker.tls.certKey" .keyKey }}
        path: tls.key
      {{- end }}
{{- end }}{{ end }}
{{- if eq $v.tokenStore.type "sqlite" }}
- name: store
  persistentVolumeClaim:
    claimName: {{ $v.tokenStore.sqlite.existingClaim }}
{{- end }}
{{- end -}}

{{- define "warden.volumeMounts" -}}
- name: config
  mountPath: /etc/warden
  readOnly: true
- name: token-key
  mountPath: /var/run/secrets/warden
  readOnly: true
{{- if .Values.broker.tls.existingSecret }}
- name: broker-tls
  mountPath: /var/run/secrets/warden-broker
  readOnly: true
{{- end }}
{{- if eq .Values.tokenStore.type "sqlite" }}
- name: store
  mountPath: /var/lib/warden/store
{{- end }}
{{- end -}}

{{/* Probes; call with (dict "root" $ "c" .Values.worker). */}}
{{- define "warden.probes" -}}
startupProbe:
  httpGet:
    path: /livez
    port: admin
  periodSeconds: {{ .c.startupProbe.periodSeconds }}
  failureThreshold: {{ .c.startupProbe.failureThreshold }}
  timeoutSeconds: {{ .c.startupProbe.timeoutSeconds }}
livenessProbe:
  httpGet:
    path: /livez
    port: admin
  periodSeconds: {{ .c.livenessProbe.periodSeconds }}
  failureThreshold: {{ .c.livenessProbe.failureThreshold }}
  timeoutSeconds: {{ .c.livenessProbe.timeoutSeconds }}
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: {{ .c.readinessProbe.periodSeconds }}
  failureThreshold: {{ .c.readinessProbe.failureThreshold }}
  timeoutSeconds: {{ .c.readinessProbe.timeoutSeconds }}
{{- end -}}

{{/* Pod annotations that roll the pods when config or chart-made secrets change. */}}
{{- define "warden.podAnnotations" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if .Values.secrets.createFromValues }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end -}}
