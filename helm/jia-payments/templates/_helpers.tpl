{{/* Names */}}
{{- define "jia-payments.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "jia-payments.fullname" -}}
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

{{- define "jia-payments.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "jia-payments.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels. Component helpers take (dict "root" $ "component" "web" ["group" "webhooks"]). */}}
{{- define "jia-payments.selectorLabels" -}}
app.kubernetes.io/name: {{ include "jia-payments.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "jia-payments.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "jia-payments.selectorLabels" . }}
app.kubernetes.io/version: {{ include "jia-payments.tag" (dict "root" .) | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: jia
{{- end }}

{{- define "jia-payments.componentSelectorLabels" -}}
{{ include "jia-payments.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .group }}
jia-payments/worker-group: {{ . }}
{{- end }}
{{- end }}

{{- define "jia-payments.componentLabels" -}}
{{ include "jia-payments.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- with .group }}
jia-payments/worker-group: {{ . }}
{{- end }}
{{- end }}

{{/*
The image. The tag defaults to the chart's appVersion; "latest" and empty tags are refused here too
(the schema already rejects them in values), so not even an appVersion of "latest" slips through.
Takes (dict "root" $ ["tag" override]).
*/}}
{{- define "jia-payments.tag" -}}
{{- $tag := .tag | default .root.Values.image.tag | default .root.Chart.AppVersion | toString }}
{{- if or (eq $tag "") (eq (lower $tag) "latest") }}
{{- fail "image tag must be an explicit version, never empty or \"latest\"" }}
{{- end }}
{{- $tag }}
{{- end }}

{{- define "jia-payments.image" -}}
{{- $image := .root.Values.image }}
{{- if and $image.digest (not .tag) }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (include "jia-payments.tag" .) }}
{{- end }}
{{- end }}

{{/* Non-secret configuration (the ConfigMap's data; the migration hook inlines the same as env). */}}
{{- define "jia-payments.configData" -}}
{{- $c := .Values.config -}}
DJANGO_ENV: production
ALLOWED_HOSTS: {{ join "," $c.allowedHosts | quote }}
LOG_LEVEL: {{ $c.logLevel | quote }}
PORT: {{ .Values.web.port | quote }}
JWT_ALGORITHM: {{ $c.jwt.algorithm | quote }}
JWT_ISSUER: {{ $c.jwt.issuer | quote }}
JWT_AUDIENCE: {{ $c.jwt.audience | quote }}
{{- with $c.jwt.jwksUrl }}
JWT_JWKS_URL: {{ . | quote }}
{{- end }}
SERVICE_AUTH_MODE: {{ $c.serviceAuthMode | quote }}
{{- with $c.spiffe }}
{{- with .trustDomain }}
SPIFFE_TRUST_DOMAIN: {{ . | quote }}
{{- end }}
{{- if .trustBundle.configMapName }}
SPIFFE_TRUST_BUNDLE: {{ printf "/etc/spiffe/%s" .trustBundle.key | quote }}
{{- end }}
{{- end }}
{{- if eq $c.serviceAuthMode "xfcc" }}
SERVICE_SPIFFE_ID: {{ include "jia-payments.spiffeId" . | quote }}
{{- end }}
TRUSTED_PROXY_COUNT: {{ $c.trustedProxyCount | quote }}
{{- with $c.checkoutReturnUrlOrigins }}
CHECKOUT_RETURN_URL_ORIGINS: {{ join "," . | quote }}
{{- end }}
STRIPE_API_BASE: {{ $c.stripeApiBase | quote }}
CELERY_TASK_TIME_LIMIT: {{ .Values.workers.taskTimeLimitSeconds | quote }}
{{- with .Values.gdprExports }}
GDPR_EXPORT_STORAGE: s3
GDPR_EXPORT_BUCKET: {{ .bucket | quote }}
{{- with .endpointUrl }}
AWS_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with .region }}
AWS_S3_REGION_NAME: {{ . | quote }}
{{- end }}
GDPR_EXPORT_URL_TTL_SECONDS: {{ .urlTtlSeconds | quote }}
{{- end }}
{{- range $name, $value := $c.extraEnv }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* This service's SPIFFE ID: config.spiffe.serviceId, else SPIRE's usual spiffe://<domain>/ns/<namespace>/sa/<account>. */}}
{{- define "jia-payments.spiffeId" -}}
{{- $spiffe := .Values.config.spiffe }}
{{- $spiffe.serviceId | default (printf "spiffe://%s/ns/%s/sa/%s" $spiffe.trustDomain .Release.Namespace (include "jia-payments.serviceAccountName" .)) }}
{{- end }}

{{/* Percentage of extra web pods a rolling update may start (the Deployment's maxSurge; counted in the connection budget). */}}
{{- define "jia-payments.webMaxSurgePercent" -}}
25
{{- end }}

{{/*
The worst case of PostgreSQL connections this release opens, as JSON {"total": N, "parts": ["web: ...", ...]}:
every Deployment at its largest (the HPA's maxReplicas, else replicas) plus the pods a rolling update adds,
times the connections of each pod's processes:
- web: gunicorn workers × database.pool.maxSize (one pool per process, shared by its threads);
- a worker group: concurrency (one persistent connection per prefork child; the parent holds none);
- beat: 1 (Recreate: never two at once); the migration hook: 1 (it runs while the old release serves).
*/}}
{{- define "jia-payments.databaseConnections" -}}
{{- $v := .Values }}
{{- $web := $v.web }}
{{- $webPods := int (ternary $web.autoscaling.maxReplicas $web.replicas $web.autoscaling.enabled) }}
{{- $webSurge := div (add (mul $webPods (include "jia-payments.webMaxSurgePercent" . | int)) 99) 100 }}
{{- $perWebPod := mul $web.gunicorn.workers $v.database.pool.maxSize }}
{{- $total := mul (add $webPods $webSurge) $perWebPod }}
{{- $parts := list (printf "web %d pods (%d + %d surge) x %d processes x pool %d = %d" (add $webPods $webSurge) $webPods $webSurge (int $web.gunicorn.workers) (int $v.database.pool.maxSize) (mul (add $webPods $webSurge) $perWebPod)) }}
{{- range $name, $group := $v.workers.groups }}
{{- $g := deepCopy $v.workers.defaults }}
{{- $_ := include "jia-payments.mergeInto" (dict "dst" $g "src" $group) }}
{{- if or (not (hasKey $g "enabled")) $g.enabled }}
{{- $pods := add (int (ternary $g.autoscaling.maxReplicas $g.replicas $g.autoscaling.enabled)) 1 }}
{{- $count := mul $pods $g.concurrency }}
{{- $total = add $total $count }}
{{- $parts = append $parts (printf "worker-%s %d pods (incl. 1 surge) x concurrency %d = %d" $name $pods (int $g.concurrency) $count) }}
{{- end }}
{{- end }}
{{- if $v.beat.enabled }}
{{- $total = add $total 1 }}
{{- $parts = append $parts "beat 1" }}
{{- end }}
{{- if $v.migrations.enabled }}
{{- $total = add $total 1 }}
{{- $parts = append $parts "migrations 1" }}
{{- end }}
{{- dict "total" $total "parts" $parts | toJson }}
{{- end }}

{{/* Fail rendering when the worst case exceeds database.maxConnections; otherwise the worst case. */}}
{{- define "jia-payments.checkedDatabaseConnections" -}}
{{- $worst := include "jia-payments.databaseConnections" . | fromJson }}
{{- $limit := int .Values.database.maxConnections }}
{{- if gt (int $worst.total) $limit }}
{{- fail (printf "the release can open %d PostgreSQL connections, over database.maxConnections (%d): %s. Lower replicas/maxReplicas, gunicorn workers, database.pool.maxSize or worker concurrency, or raise database.maxConnections to what the database (or PgBouncer) grants" (int $worst.total) $limit (join "; " $worst.parts)) }}
{{- end }}
{{- int $worst.total }}
{{- end }}

{{/* Pod-level settings shared by every workload. Takes (dict "root" $ "values" <component values>). */}}
{{- define "jia-payments.podSpecCommon" -}}
{{- $root := .root -}}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      {{- with $root.Values.tmpVolume.medium }}
      medium: {{ . }}
      {{- end }}
      sizeLimit: {{ $root.Values.tmpVolume.sizeLimit }}
  {{- if and (eq .component "web") $root.Values.envoy.enabled }}
  - name: envoy-config
    configMap:
      name: {{ include "jia-payments.fullname" $root }}-envoy
  - name: spiffe-workload-api
    csi:
      driver: {{ $root.Values.envoy.workloadApi.csiDriver }}
      readOnly: true
  {{- end }}
  {{- with $root.Values.config.spiffe.trustBundle }}
  {{- if .configMapName }}
  - name: spiffe-bundle
    configMap:
      name: {{ .configMapName }}
      items:
        - key: {{ .key }}
          path: {{ .key }}
  {{- end }}
  {{- end }}
{{- end }}

{{/* Spread replicas over nodes when they can be (never blocks scheduling). Takes (dict "root" "component" ["group"] "values"). */}}
{{- define "jia-payments.topologySpread" -}}
{{- if .values.topologySpread.enabled -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "jia-payments.componentSelectorLabels" . | nindent 8 }}
{{- end }}
{{- end }}

{{/* Container settings shared by every container. Takes (dict "root" $ ["tag" override]). */}}
{{- define "jia-payments.containerCommon" -}}
{{- $root := .root -}}
image: {{ include "jia-payments.image" . }}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml $root.Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if $root.Values.config.spiffe.trustBundle.configMapName }}
  - name: spiffe-bundle
    mountPath: /etc/spiffe
    readOnly: true
  {{- end }}
{{- end }}

{{/*
Secrets from the existing Secret, configuration from the ConfigMap. A name in both takes the ConfigMap's
value (the later source wins), as in the migration hook, where the inlined env wins over envFrom.
*/}}
{{- define "jia-payments.envFrom" -}}
envFrom:
  - secretRef:
      name: {{ .Values.secrets.existingSecret }}
  {{- with .Values.gdprExports.credentials.existingSecret }}
  # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY of the export bucket, when there is no workload identity.
  - secretRef:
      name: {{ . }}
  {{- end }}
  - configMapRef:
      name: {{ include "jia-payments.fullname" . }}-config
{{- end }}

{{/* Pod template annotations: roll the pods whenever the configuration changes. */}}
{{- define "jia-payments.podAnnotations" -}}
checksum/config: {{ include "jia-payments.configData" .root | sha256sum }}
{{- with .values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* `celery inspect ping` against one node; its own env var keeps the probe's files out of the metrics dir. */}}
{{- define "jia-payments.celeryPing" -}}
exec:
  command:
    - /bin/sh
    - -c
    - unset PROMETHEUS_MULTIPROC_DIR; exec celery -A payments_project inspect ping --destination "{{ .node }}@${HOSTNAME}" --timeout 10
{{- end }}

{{/*
A worker's liveness: its heartbeat file (scripts/docker-entrypoint.sh passes --heartbeat-file) was touched in
the last 30 s. The worker touches it every 5 s while its event loop turns, and all along a broker outage
(payments_project/heartbeat.py), so a RabbitMQ outage of any length restarts no worker; a wedged loop does.
*/}}
{{- define "jia-payments.workerHeartbeat" -}}
exec:
  command:
    - /bin/sh
    - -c
    - test $(( $(date +%s) - $(stat -c %Y /tmp/worker-heartbeat 2>/dev/null || echo 0) )) -lt 30
{{- end }}

{{- define "jia-payments.probeTimings" -}}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- end }}

{{/*
Deep-merge .src into the map .dst, in place: maps merge key by key, anything else (false and 0
included, unlike sprig's merge) replaces. Used to lay a worker group over workers.defaults.
*/}}
{{- define "jia-payments.mergeInto" -}}
{{- $dst := .dst }}
{{- range $key, $value := .src }}
{{- if and (kindIs "map" $value) (kindIs "map" (get $dst $key)) }}
{{- include "jia-payments.mergeInto" (dict "dst" (get $dst $key) "src" $value) }}
{{- else }}
{{- $_ := set $dst $key $value }}
{{- end }}
{{- end }}
{{- end }}


{{/* The migration hook's environment: the configuration inlined, the secrets from the existing Secret. */}}
{{- define "jia-payments.migrateEnv" -}}
envFrom:
  - secretRef:
      name: {{ .Values.secrets.existingSecret }}
  {{- with .Values.gdprExports.credentials.existingSecret }}
  # AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY of the export bucket, when there is no workload identity.
  - secretRef:
      name: {{ . }}
  {{- end }}
env:
  {{- range $name, $value := include "jia-payments.configData" . | fromYaml }}
  - name: {{ $name }}
    value: {{ $value | toString | quote }}
  {{- end }}
{{- end }}
