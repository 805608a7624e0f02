{{/*
Names. The full name is "<release>-warmpool" unless the release name already holds "warmpool".
Kubernetes names are capped at 63 characters.
*/}}
{{- define "warmpool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "warmpool.fullname" -}}
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

{{- define "warmpool.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels of every object of the release. */}}
{{- define "warmpool.labels" -}}
helm.sh/chart: {{ include "warmpool.chart" . }}
{{ include "warmpool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: warmpool
{{- end }}

{{/* The labels that select the release's pods (immutable in a Deployment: never change them). */}}
{{- define "warmpool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "warmpool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "warmpool.serviceAccountName" -}}
{{- default (include "warmpool.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{/* The image reference, by digest when one is given. */}}
{{- define "warmpool.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The Secret that holds the serving certificate (tls.crt, tls.key). */}}
{{- define "warmpool.tlsSecretName" -}}
{{- if eq .Values.certs.mode "provided" }}
{{- required "certs.provided.secretName is required when certs.mode is provided" .Values.certs.provided.secretName }}
{{- else }}
{{- printf "%s-tls" (include "warmpool.fullname" .) }}
{{- end }}
{{- end }}

{{/* The DNS names the API server uses to reach the webhook Service. */}}
{{- define "warmpool.dnsNames" -}}
{{- $svc := include "warmpool.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/* The namespaces that are never sent to the webhook (the release's own and the system ones). */}}
{{- define "warmpool.excludedNamespaces" -}}
{{- $ns := list .Release.Namespace "kube-system" "kube-public" "kube-node-lease" }}
{{- concat $ns .Values.tenants.excludeNamespaces | uniq | toJson }}
{{- end }}

{{/*
The tolerations tenant pods get: exactly the pool's taint (key and value of pool.nodeLabel).
*/}}
{{- define "warmpool.tolerations" -}}
{{- if .Values.pool.taint.enabled }}
{{- list (dict "key" .Values.pool.nodeLabel.key "operator" "Equal" "value" .Values.pool.nodeLabel.value "effect" .Values.pool.taint.effect) | toJson }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{/*
The configuration file of both processes (DESIGN.md "Configuration file"). Only keys that
src/config/mod.rs knows are rendered: it rejects unknown ones.
*/}}
{{/*
prewarmer.schedule as the config file spells it: spareSlots as integers (values arrive as
floats), the other keys as strings, absent ones left out.
*/}}
{{- define "warmpool.schedule" -}}
{{- $out := list }}
{{- range (.Values.prewarmer.schedule | default list) }}
{{- $w := dict "name" (toString .name) "cron" (toString .cron) "duration" (toString .duration) "spareSlots" (int .spareSlots) }}
{{- if .timezone }}{{- $_ := set $w "timezone" (toString .timezone) }}{{- end }}
{{- if .leadTime }}{{- $_ := set $w "leadTime" (toString .leadTime) }}{{- end }}
{{- $out = append $out $w }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
prewarmer.spareSlots {auto: {min, max, span, lookback}} as the binary reads it, with the keys
given (the binary has the defaults); an integer is rendered as one.
*/}}
{{- define "warmpool.spareSlotsAuto" -}}
{{- $auto := dict }}
{{- range $k, $v := (.Values.prewarmer.spareSlots.auto | default dict) }}
{{- if or (eq $k "min") (eq $k "max") }}{{- $_ := set $auto $k (int $v) }}{{- else }}{{- $_ := set $auto $k (toString $v) }}{{- end }}
{{- end }}
{{- toJson (dict "auto" $auto) }}
{{- end }}

{{/* Whether the reconciler records arrivals (spareSlots.auto): the Role then allows its ConfigMap. */}}
{{- define "warmpool.recordsArrivals" -}}
{{- if kindIs "map" .Values.prewarmer.spareSlots }}true{{- end }}
{{- end }}

{{- define "warmpool.config" -}}
{{- $spare := .Values.prewarmer.spareSlots }}
{{- if kindIs "map" $spare }}
{{- $spare = include "warmpool.spareSlotsAuto" . | fromJson }}
{{- else }}
{{- $spare = int $spare }}
{{- end }}
{{- $slot := .Values.prewarmer.slot }}
{{- if and (kindIs "map" $slot) (not $slot.auto) }}
{{- $slot = dict "cpu" (toString $slot.cpu) "memory" (toString $slot.memory) }}
{{- else }}
{{- $slot = "auto" }}
{{- end }}
{{- $config := dict
  "tenants" (dict
    "namespacePatterns" .Values.tenants.namespacePatterns
    "excludeNamespaces" .Values.tenants.excludeNamespaces
    "namespaceMatchExpressions" .Values.tenants.namespaceMatchExpressions
    "timeToReady" (dict
      "enabled" .Values.tenants.timeToReady.enabled
      "window" (toString .Values.tenants.timeToReady.window)
      "timeout" (toString .Values.tenants.timeToReady.timeout))
    "repair" .Values.tenants.repair)
  "pool" (dict
    "nodeLabel" (dict "key" .Values.pool.nodeLabel.key "value" (toString .Values.pool.nodeLabel.value))
    "affinity" .Values.pool.affinity
    "tolerations" (include "warmpool.tolerations" . | fromJsonArray))
  "prewarmer" (dict
    "spareSlots" $spare
    "slot" $slot
    "doNotDisrupt" .Values.prewarmer.doNotDisrupt
    "image" .Values.prewarmer.image
    "schedule" (include "warmpool.schedule" . | fromJsonArray))
  "imageCache" (dict
    "discover" .Values.imageCache.discover
    "discoverPerNamespace" (int .Values.imageCache.discoverPerNamespace)
    "discoverRegistries" .Values.imageCache.discoverRegistries
    "maxImages" (int .Values.imageCache.maxImages)
    "images" .Values.imageCache.images
    "imagePullSecrets" .Values.imageCache.imagePullSecrets
    "toolImage" (include "warmpool.image" .)
    "architectures" .Values.imageCache.architectures)
}}
{{- $down := .Values.prewarmer.scaleDown | default dict }}
{{- if $down.enabled }}
{{- $scaleDown := dict "step" (int ($down.step | default 1)) "every" (toString ($down.every | default "5m")) }}
{{- if $down.quietFor }}{{- $_ := set $scaleDown "quietFor" (toString $down.quietFor) }}{{- end }}
{{- $_ := set $config.prewarmer "scaleDown" $scaleDown }}
{{- end }}
{{- with .Values.prewarmer.slotMax }}
{{- if and .cpu .memory }}
{{- $_ := set $config.prewarmer "slotMax" (dict "cpu" (toString .cpu) "memory" (toString .memory)) }}
{{- end }}
{{- end }}
{{- with .Values.imageCache.maxBytesPerNode }}
{{- $_ := set $config.imageCache "maxBytesPerNode" (toString .) }}
{{- end }}
{{- with .Values.pricing }}
{{- $_ := set $config "pricing" (dict "cpuCoreHour" (float64 .cpuCoreHour) "memoryGiBHour" (float64 .memoryGiBHour) "currency" (.currency | default "USD")) }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/*
One shell-style glob (the syntax of src/core/tenant.rs: globset with `*`, `?`, `[…]`, `[!…]`,
`{a,b}`, backslash escapes) as a CEL condition on request.namespace:
  demo-*   → request.namespace.startsWith('demo-')
  *-prod   → request.namespace.endsWith('-prod')
  payments → request.namespace == 'payments'
  *        → true
  anything else → request.namespace.matches('^…$') with an anchored RE2 regex.
*/}}
{{- define "warmpool.globToCEL" -}}
{{- $glob := . }}
{{- $meta := "[*?\\[\\]{}\\\\]" }}
{{- if eq $glob "*" }}
{{- "true" }}
{{- else if not (regexMatch $meta $glob) }}
{{- printf "request.namespace == '%s'" $glob }}
{{- else if regexMatch "^[^*?\\[\\]{}\\\\]+\\*$" $glob }}
{{- printf "request.namespace.startsWith('%s')" (trimSuffix "*" $glob) }}
{{- else if regexMatch "^\\*[^*?\\[\\]{}\\\\]+$" $glob }}
{{- printf "request.namespace.endsWith('%s')" (trimPrefix "*" $glob) }}
{{- else }}
{{- printf "request.namespace.matches('%s')" (include "warmpool.globToRegex" $glob | replace "\\" "\\\\") }}
{{- end }}
{{- end }}

{{/*
A glob as an anchored RE2 regex. Namespace names have no "/", so `*` and `**` are `.*`.
*/}}
{{- define "warmpool.globToRegex" -}}
{{- $glob := . }}
{{- $out := "^" }}
{{- $inClass := false }}
{{- $classStart := false }}
{{- $escaped := false }}
{{- $braces := 0 }}
{{- /* Whether the alternative of the innermost open `{` is still empty: globset drops empty
alternatives where a shell matches the empty string, so src/core/tenant.rs refuses them and so do we. */}}
{{- $altEmpty := false }}
{{- $emptyAlt := printf "tenants.namespacePatterns: `%s` has an empty alternative in `{…}`; write it out, e.g. `demo-{a,b}*` and `demo-*`" $glob }}
{{- range $c := splitList "" $glob }}
{{- if not (or (and (not $escaped) (not $inClass) (or (eq $c "{") (and (gt $braces 0) (or (eq $c ",") (eq $c "}")))))) }}
{{- $altEmpty = false }}
{{- end }}
{{- if $escaped }}
{{- $out = print $out (regexQuoteMeta $c) }}
{{- $escaped = false }}
{{- else if $inClass }}
{{- if and $classStart (or (eq $c "!") (eq $c "^")) }}
{{- $out = print $out "^" }}
{{- else if and (eq $c "]") (not $classStart) }}
{{- $out = print $out "]" }}
{{- $inClass = false }}
{{- else if eq $c "\\" }}
{{- $out = print $out "\\\\" }}
{{- else if eq $c "[" }}
{{- $out = print $out "\\[" }}
{{- else }}
{{- $out = print $out $c }}
{{- end }}
{{- if not (and $classStart (or (eq $c "!") (eq $c "^"))) }}
{{- $classStart = false }}
{{- end }}
{{- else if eq $c "\\" }}
{{- $escaped = true }}
{{- else if eq $c "*" }}
{{- if not (hasSuffix ".*" $out) }}
{{- $out = print $out ".*" }}
{{- end }}
{{- else if eq $c "?" }}
{{- $out = print $out "." }}
{{- else if eq $c "[" }}
{{- $out = print $out "[" }}
{{- $inClass = true }}
{{- $classStart = true }}
{{- else if eq $c "{" }}
{{- $out = print $out "(?:" }}
{{- $braces = add1 $braces }}
{{- $altEmpty = true }}
{{- else if and (eq $c "}") (gt $braces 0) }}
{{- if $altEmpty }}{{ fail $emptyAlt }}{{ end }}
{{- $out = print $out ")" }}
{{- $braces = sub $braces 1 }}
{{- $altEmpty = false }}
{{- else if and (eq $c ",") (gt $braces 0) }}
{{- if $altEmpty }}{{ fail $emptyAlt }}{{ end }}
{{- $out = print $out "|" }}
{{- $altEmpty = true }}
{{- else }}
{{- $out = print $out (regexQuoteMeta $c) }}
{{- end }}
{{- end }}
{{- if or $inClass $escaped (gt $braces 0) }}
{{- fail (printf "tenants.namespacePatterns: `%s` is not a complete glob (unclosed [, { or trailing \\)" $glob) }}
{{- end }}
{{- print $out "$" }}
{{- end }}

{{/* The whole CEL expression: any pattern matches. */}}
{{/*
tenants.namespaceMatchExpressions as CEL on the request's namespaceObject, read the way the
API server reads a namespaceSelector (a missing label is NotIn every set); `true` when empty.
*/}}
{{- define "warmpool.namespaceMatchCEL" -}}
{{- $parts := list }}
{{- range .Values.tenants.namespaceMatchExpressions }}
{{- $has := printf "(has(namespaceObject.metadata.labels) && %s in namespaceObject.metadata.labels)" (toJson .key) }}
{{- $in := printf "(%s && namespaceObject.metadata.labels[%s] in %s)" $has (toJson .key) (toJson (default (list) .values)) }}
{{- if eq .operator "In" }}{{- $parts = append $parts $in }}
{{- else if eq .operator "NotIn" }}{{- $parts = append $parts (printf "!%s" $in) }}
{{- else if eq .operator "Exists" }}{{- $parts = append $parts $has }}
{{- else }}{{- $parts = append $parts (printf "!%s" $has) }}
{{- end }}
{{- end }}
{{- if $parts }}{{ join " && " $parts }}{{ else }}true{{ end }}
{{- end }}

{{- define "warmpool.namespaceNameCEL" -}}
{{- $parts := list }}
{{- range .Values.tenants.namespacePatterns }}
{{- $parts = append $parts (include "warmpool.globToCEL" .) }}
{{- end }}
{{- join " || " $parts }}
{{- end }}

{{/* The node class the NodePool refers to (see nodePool.nodeClassName in values.yaml). */}}
{{- define "warmpool.nodeClassName" -}}
{{- $np := .Values.nodePool }}
{{- if $np.nodeClassName }}
{{- $np.nodeClassName }}
{{- else if and (eq $np.flavor "karpenter") $np.ec2NodeClass.create }}
{{- include "warmpool.fullname" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/*
The PriorityClass of warmpool's own pods: priorityClassName, or the chart's own class
(ownPriorityClass), or none.
*/}}
{{- define "warmpool.priorityClassName" -}}
{{- if .Values.priorityClassName -}}
{{- .Values.priorityClassName -}}
{{- else if .Values.ownPriorityClass.create -}}
{{- include "warmpool.fullname" . -}}
{{- end -}}
{{- end }}
