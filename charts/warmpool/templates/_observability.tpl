{{/*
warmpool's alerts, one group per part. Each alert is one list item of its group's template, so a
new one (tenant time to Ready, escaped pods: issue 13 items 1 and 2, once their metrics exist) is
one block in one place (say a "tenants" group: one more name in "warmpool.alertGroups" and its
"warmpool.alerts.tenants" template); tests/chart/observability.rs then asks for its name in the
`disabled` enum of values.schema.json and a firing case in tests/chart/alerts_test.yaml.
Prometheus' own templating ({{ $value }}, {{ $labels.x }}) is written as Helm raw strings.

Every selector names the release's namespace and Service: the labels the chart's ServiceMonitor
gives each scraped series (namespace, service, endpoint, pod). The reconciler's state gauges are
read from the replica that holds the Lease only (`and on (namespace, pod) leader == 1`): a
standby, or a replica that just lost the Lease, keeps the values it last wrote.
*/}}

{{- define "warmpool.alertGroups" -}}
{{- list "webhook" "reconciler" "warm-capacity" "image-cache" "tenants" | toJson }}
{{- end }}

{{/* The label matchers of every series scraped from this release. */}}
{{- define "warmpool.alertSelector" -}}
{{- printf "namespace=%q, service=%q" .Release.Namespace (include "warmpool.fullname" .) }}
{{- end }}

{{/* critical when an unavailable webhook blocks pods (failurePolicy Fail), else warning. */}}
{{- define "warmpool.webhookSeverity" -}}
{{- if eq .Values.webhook.failurePolicy "Fail" }}critical{{ else }}warning{{ end }}
{{- end }}

{{/* What an unavailable webhook does to tenant pods, for the descriptions. */}}
{{- define "warmpool.webhookImpact" -}}
{{- if eq .Values.webhook.failurePolicy "Fail" -}}
with failurePolicy Fail, every tenant pod create is refused meanwhile
{{- else -}}
with failurePolicy Ignore, tenant pods are admitted unmutated meanwhile: they start cold, off the warm pool, and stay there
{{- end }}
{{- end }}

{{- define "warmpool.alerts.webhook" -}}
{{- $sel := include "warmpool.alertSelector" . }}
{{- $ns := .Release.Namespace }}
{{- $fullname := include "warmpool.fullname" . }}
{{- $rule := .Values.observability.prometheusRule }}
- alert: WarmpoolWebhookUnavailable
  # No webhook metrics endpoint answers (no pod running, or none scraped){{ if $rule.kubeStateMetrics }}, or warmpool's
  # pods run but none is Ready (kube-state-metrics){{ end }}.
  expr: |-
    absent(up{ {{- $sel }}, endpoint="metrics"} == 1)
    {{- if $rule.kubeStateMetrics }}
    or
    kube_deployment_status_replicas_available{namespace={{ $ns | quote }}, deployment={{ $fullname | quote }}} == 0
    {{- end }}
  for: 5m
  labels:
    severity: {{ include "warmpool.webhookSeverity" . }}
  annotations:
    summary: >-
      No warmpool webhook replica is serving in {{ $ns }}.
    description: >-
      For 5 minutes no replica of the warmpool webhook ({{ $ns }}/{{ $fullname }}) has been
      scraped up{{ if $rule.kubeStateMetrics }} or Ready{{ end }}; {{ include "warmpool.webhookImpact" . }}.
      Look at `kubectl -n {{ $ns }} get pods -l app.kubernetes.io/instance={{ .Release.Name }}`
      and `kubectl -n {{ $ns }} describe deployment {{ $fullname }}`, then the webhook container's
      logs. Running but not Ready usually means no certificate it can load (see the certificate
      alerts); Pending means no node fits it (resources, priorityClassName).
- alert: WarmpoolWebhookErrors
  # Error outcomes are every outcome but the four answers (patched, unchanged, skipped,
  # ignored): malformed, too_large, body_error, timeout, overloaded… The API server treats them
  # per failurePolicy.
  expr: |-
    sum(rate(warmpool_webhook_reviews_total{ {{- $sel }}, outcome!~"patched|unchanged|skipped|ignored"}[5m]))
    /
    sum(rate(warmpool_webhook_reviews_total{ {{- $sel }}}[5m]))
    > 0.05
  for: 10m
  labels:
    severity: {{ include "warmpool.webhookSeverity" . }}
  annotations:
    summary: >-
      {{`{{ $value | humanizePercentage }}`}} of warmpool's admission reviews end in an error.
    description: >-
      For 10 minutes more than 5% of the reviews the warmpool webhook in {{ $ns }} answered
      were errors; {{ include "warmpool.webhookImpact" . }}. See which outcome:
      `sum by (outcome) (rate(warmpool_webhook_reviews_total{namespace="{{ $ns }}"}[5m]))`.
      overloaded or timeout: the replicas are saturated or starved, raise replicaCount or
      webhook.resources (and check CPU throttling); malformed, too_large or body_error: a caller
      that is not the API server, or pods beyond 3 MiB; the webhook container's logs name each
      (one line per review with its uid and decision).
- alert: WarmpoolWebhookCertificateExpiringSoon
  expr: |-
    min(warmpool_webhook_certificate_expiry_timestamp_seconds{ {{- $sel }}} > 0) - time()
    < {{ int $rule.certificateExpiryDays }} * 86400 > 0
  for: 1h
  labels:
    severity: warning
  annotations:
    summary: >-
      warmpool's serving certificate expires in {{`{{ $value | humanizeDuration }}`}}.
    description: >-
      The certificate the warmpool webhook in {{ $ns }} serves expires within
      {{ int $rule.certificateExpiryDays }} days; once expired the API server cannot call it
      ({{ include "warmpool.webhookImpact" . }}).
      {{- if eq .Values.certs.mode "cert-manager" }}
      cert-manager should have renewed it by now: `kubectl -n {{ $ns }} describe certificate
      {{ $fullname }}` shows why it did not.
      {{- else if eq .Values.certs.mode "provided" }}
      Renew the Secret {{ .Values.certs.provided.secretName }} (and certs.provided.caBundle if
      the CA changes).
      {{- else }}
      Rotate it: `kubectl -n {{ $ns }} delete secret {{ include "warmpool.tlsSecretName" . }}`,
      then `helm upgrade` the release (the chart generates a new CA and certificate).
      {{- end }}
      The webhook loads a rotated Secret without a restart
      (warmpool_webhook_certificate_reloads_total{result="success"} counts it).
- alert: WarmpoolWebhookCertificateExpired
  # 0 = the webhook cannot read its certificate's notAfter.
  expr: |-
    min by (namespace, pod) (warmpool_webhook_certificate_expiry_timestamp_seconds{ {{- $sel }}}) - time() <= 0
  for: 5m
  labels:
    severity: {{ include "warmpool.webhookSeverity" . }}
  annotations:
    summary: >-
      warmpool webhook {{`{{ $labels.pod }}`}} serves an expired certificate, or none it can read.
    description: >-
      The API server refuses the TLS handshake with {{`{{ $labels.pod }}`}} in {{ $ns }};
      {{ include "warmpool.webhookImpact" . }}. Check the Secret
      {{ include "warmpool.tlsSecretName" . }} (`kubectl -n {{ $ns }} get secret
      {{ include "warmpool.tlsSecretName" . }} -o jsonpath='{.data.tls\.crt}' | base64 -d |
      openssl x509 -noout -enddate`) and the webhook container's logs (it logs an error past the
      notAfter, and why it cannot read one). Renew it as WarmpoolWebhookCertificateExpiringSoon
      says; no restart is needed.
- alert: WarmpoolWebhookCertificateReloadFailing
  # A changed Secret that failed to load, and no successful load since: the webhook keeps the
  # old certificate, which will expire.
  expr: |-
    sum by (namespace, pod) (increase(warmpool_webhook_certificate_reloads_total{ {{- $sel }}, result="failure"}[15m])) > 0
    unless on (namespace, pod)
    sum by (namespace, pod) (increase(warmpool_webhook_certificate_reloads_total{ {{- $sel }}, result="success"}[15m])) > 0
  for: 5m
  labels:
    severity: warning
  annotations:
    summary: >-
      warmpool webhook {{`{{ $labels.pod }}`}} cannot load its rotated certificate.
    description: >-
      The serving certificate or key in {{ $ns }} changed on disk and the webhook could not load
      them (a key that does not match the certificate, a bad PEM); it keeps serving the previous
      certificate until it expires. The webhook container's logs say why; fix the Secret
      {{ include "warmpool.tlsSecretName" . }} (tls.crt and tls.key must be a pair).
{{- end }}

{{- define "warmpool.alerts.reconciler" -}}
{{- $sel := include "warmpool.alertSelector" . }}
{{- $ns := .Release.Namespace }}
{{- $rule := .Values.observability.prometheusRule }}
- alert: WarmpoolReconcilerNotLeading
  # `or vector(0)`: no reconciler scraped at all is no leader either.
  expr: |-
    (sum(warmpool_reconcile_leader{ {{- $sel }}}) or vector(0)) < 1
  for: 5m
  labels:
    severity: warning
  annotations:
    summary: >-
      No warmpool reconciler holds the Lease in {{ $ns }}.
    description: >-
      For 5 minutes no reconciler replica has led: new tenant namespaces are not labelled, and the
      placeholders and the image cache are neither repaired nor resized (admission goes on).
      `kubectl -n {{ $ns }} get lease warmpool-reconciler -o yaml` shows the holder; the
      reconciler containers' logs show "lease lost" or "reconciling stopped" and why (often the
      API server unreachable or RBAC: `kubectl auth can-i update leases -n {{ $ns }}
      --as=system:serviceaccount:{{ $ns }}:{{ include "warmpool.serviceAccountName" . }}`).
- alert: WarmpoolReconcileFailing
  # not_leader is the expected end of a hand-over, not a failure to act on.
  expr: |-
    sum by (namespace, target, kind) (rate(warmpool_reconcile_failures_total{ {{- $sel }}, kind!="not_leader"}[10m])) > 0
  for: 15m
  labels:
    severity: warning
  annotations:
    summary: >-
      warmpool cannot reconcile its {{`{{ $labels.target }}`}} ({{`{{ $labels.kind }}`}}).
    description: >-
      For 15 minutes reconcile runs of the {{`{{ $labels.target }}`}} in {{ $ns }} kept failing
      with {{`{{ $labels.kind }}`}} (retried with backoff); what it keeps in place drifts meanwhile.
      forbidden: the chart's RBAC was changed or is not installed; invalid: a value the API server
      refuses (the logs quote it); conflict: another tool writes the same fields; transport,
      server_error, throttled, timeout: the API server is unreachable or overloaded. The
      reconciler container's logs have each failure.
{{- if $rule.kubeStateMetrics }}
- alert: WarmpoolNoSpareSlotReady
  # Wanted: the leader's warmpool_reconcile_spare_slots (with prewarmer.schedule, the window in
  # force); Ready: the prewarmer's available replicas (kube-state-metrics).
  expr: |-
    max(warmpool_reconcile_spare_slots{ {{- $sel }}} and on (namespace, pod) (warmpool_reconcile_leader{ {{- $sel }}} == 1)) > 0
    and on ()
    max(kube_deployment_status_replicas_available{namespace={{ $ns | quote }}, deployment="warmpool-prewarmer"}) == 0
  for: {{ $rule.noSpareSlotFor }}
  labels:
    severity: warning
  annotations:
    summary: >-
      No warmpool spare slot has been ready for {{ $rule.noSpareSlotFor }} in {{ $ns }}.
    description: >-
      Spare slots are wanted but no placeholder of the prewarmer is Ready: the next tenant waits
      for a new node and pulls its images cold (minutes, not seconds). `kubectl -n {{ $ns }} get
      pods -o wide` and `kubectl -n {{ $ns }} describe deployment warmpool-prewarmer`: Pending
      placeholders mean no warm node has room and none is coming (the NodePool's limits,
      instance types or capacity; `kubectl get nodeclaims`, Karpenter's logs); no placeholder pod
      at all means the Deployment cannot create them (its ReplicaSet's events: a quota, the
      PriorityClass warmpool-placeholder missing).
{{- end }}
{{- end }}

{{- define "warmpool.alerts.warm-capacity" -}}
{{- $sel := include "warmpool.alertSelector" . }}
{{- $ns := .Release.Namespace }}
{{- $rule := .Values.observability.prometheusRule }}
{{- $leader := printf "and on (namespace, pod) (warmpool_reconcile_leader{%s} == 1)" $sel }}
- alert: WarmpoolPlaceholdersPending
  # The leader's count of placeholders with no node (no kube-state-metrics needed).
  expr: |-
    max(warmpool_prewarmer_placeholders_pending{ {{- $sel }}} {{ $leader }}) > 0
  for: {{ $rule.noSpareSlotFor }}
  labels:
    severity: warning
  annotations:
    summary: >-
      {{`{{ $value }}`}} warmpool placeholder(s) have had no node for {{ $rule.noSpareSlotFor }} in {{ $ns }}.
    description: >-
      Placeholders are Pending: the warm room they should hold is missing, and the next tenants
      wait for a new node and pull their images cold. `kubectl -n {{ $ns }} get events
      --field-selector reason=PlaceholdersPending` quotes Karpenter's reason (a NodePool at its
      limits, instance types or capacity unavailable, no NodePool with the pool's label and taint);
      `kubectl get nodeclaims` and Karpenter's logs say more.
- alert: WarmpoolNodePoolReplacesWarmNodes
  expr: |-
    max(warmpool_prewarmer_node_pool_findings{ {{- $sel }}, finding="replaces_warm_nodes"} {{ $leader }}) > 0
  for: 10m
  labels:
    severity: warning
  annotations:
    summary: >-
      A Karpenter NodePool of the warm nodes consolidates underutilized nodes.
    description: >-
      A NodePool that makes warm nodes has consolidationPolicy WhenEmptyOrUnderutilized
      (Karpenter's default when unset): Karpenter replaces warm nodes that hold only placeholders
      with cheaper ones, evicting them, and the headroom is gone for a node's boot each time.
      `kubectl -n {{ $ns }} get events --field-selector reason=NodePoolReplacesWarmNodes` names
      it; set spec.disruption.consolidationPolicy: WhenEmpty (the chart's nodePool default).
{{- end }}

{{- define "warmpool.alerts.image-cache" -}}
{{- $sel := include "warmpool.alertSelector" . }}
{{- $ns := .Release.Namespace }}
{{- $leader := printf "and on (namespace, pod) (warmpool_reconcile_leader{%s} == 1)" $sel }}
- alert: WarmpoolImageNotCached
  expr: |-
    max by (namespace, image) (warmpool_image_cache_failed_nodes{ {{- $sel }}} {{ $leader }}) > 0
  for: 15m
  labels:
    severity: warning
  annotations:
    summary: >-
      warmpool cannot cache {{`{{ $labels.image }}`}} on {{`{{ $value }}`}} warm node(s).
    description: >-
      The kubelet has failed to pull {{`{{ $labels.image }}`}} into the image cache for 15
      minutes; tenant pods that run it pull it cold there (or fail the same way), every other
      image stays cached. `kubectl -n {{ $ns }} get events --field-selector reason=ImagePullFailed`
      names the nodes and the kubelet's reason: a typo or a deleted tag (fix
      imageCache.images), a private registry (imageCache.imagePullSecrets), or a registry
      unreachable from the warm nodes.
- alert: WarmpoolImagesPendingLong
  # Pending: being pulled, or its container not started; an hour is far beyond any pull.
  expr: |-
    max(warmpool_image_cache_images{ {{- $sel }}, state="pending"} {{ $leader }}) > 0
  for: 1h
  labels:
    severity: warning
  annotations:
    summary: >-
      {{`{{ $value }}`}} cached image(s) have been pending on warm nodes for an hour in {{ $ns }}.
    description: >-
      Images of the image cache have been neither present nor failed for an hour: a very slow
      registry path, a node's disk full, or cache pods that cannot start.
      `kubectl -n {{ $ns }} get pods -o wide` and `kubectl -n {{ $ns }} describe daemonset
      warmpool-image-cache`; warmpool_image_cache_nodes{state="incomplete"} counts the nodes.
{{- end }}

{{- define "warmpool.alerts.tenants" -}}
{{- $sel := include "warmpool.alertSelector" . }}
{{- $ns := .Release.Namespace }}
{{- $leader := printf "and on (namespace, pod) (warmpool_reconcile_leader{%s} == 1)" $sel }}
- alert: WarmpoolTenantPodsUnsteered
  expr: |-
    max by (namespace) (warmpool_tenant_pods_unsteered{ {{- $sel }}} {{ $leader }}) > 0
  for: 15m
  labels:
    severity: warning
  annotations:
    summary: >-
      {{`{{ $value }}`}} tenant pod(s) escaped the webhook and run off the warm pool.
    description: >-
      Pods in tenant namespaces were admitted without warmpool's node affinity (the webhook was
      unreachable, and the chart fails open), so they started cold and stay where they landed.
      `kubectl get events -A --field-selector reason=Unsteered` lists them; delete them to have
      their controllers re-create them through the webhook, or set tenants.repair=evict. Check
      why the webhook was unreachable (WarmpoolWebhookUnavailable, its pods' restarts).
- alert: WarmpoolTenantsStartingCold
  # Over the last hour, at least 3 new tenants and most of them cold.
  expr: |-
    (
      sum by (namespace) (increase(warmpool_tenant_ready_seconds_count{ {{- $sel }}, start="cold"}[1h]))
        / sum by (namespace) (increase(warmpool_tenant_ready_seconds_count{ {{- $sel }}}[1h]))
    ) > 0.5
    and sum by (namespace) (increase(warmpool_tenant_ready_seconds_count{ {{- $sel }}}[1h])) >= 3
  for: 10m
  labels:
    severity: warning
  annotations:
    summary: >-
      Most new tenants of the last hour started cold ({{`{{ $value | humanizePercentage }}`}}).
    description: >-
      New tenants' pods landed off the warm nodes or pulled images: the spare slots are used up
      faster than they come back (raise prewarmer.spareSlots, add a prewarmer.schedule window,
      or use spareSlots auto), or the tenants run images the cache does not hold
      (imageCache.images, discover). `kubectl get events -A --field-selector
      reason=TenantReady` says per tenant how many pods ran on warm nodes and which images were
      pulled.
- alert: WarmpoolTenantsNotReady
  expr: |-
    sum by (namespace) (increase(warmpool_tenant_not_ready_total{ {{- $sel }}}[1h])) > 0
  for: 1m
  labels:
    severity: warning
  annotations:
    summary: >-
      New tenants were not Ready within tenants.timeToReady.timeout in the last hour.
    description: >-
      A new tenant's pods were not all Ready within {{ .Values.tenants.timeToReady.timeout }} of
      its namespace's creation. `kubectl get events -A --field-selector reason=TenantNotReady`
      names the namespaces; their pods' Events say why (Pending for room: the warm pool and
      Karpenter's NodePool limits; image pulls; failing probes).
{{- end }}
