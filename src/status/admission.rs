//! The screen's webhook part: the chart's Deployment, the serving certificate's expiry, the
//! MutatingWebhookConfigurations of this warmpool. Pure.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Volume};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use super::Part;
use super::model::{Certificate, Listed, Webhook, WebhookConfiguration, WebhookDeployment};
use super::parts::{CHART_NAME, NAME_LABEL, is_ready, label};

/// The chart's Deployment: labelled with the chart's name, else the one running `webhook`.
pub fn webhook_deployment(deployments: &[Deployment]) -> Option<&Deployment> {
    let runs_webhook = |d: &&Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .is_some_and(|s| {
                s.containers.iter().any(|c| {
                    c.args.as_ref().and_then(|a| a.first()).map(String::as_str) == Some("webhook")
                })
            })
    };
    deployments
        .iter()
        .find(|d| label(&d.metadata, NAME_LABEL) == Some(CHART_NAME))
        .or_else(|| deployments.iter().find(runs_webhook))
}

/// The Secret the webhook serves from: its volume `tls`.
pub fn tls_secret_name(deployment: &Deployment) -> Option<String> {
    volume(deployment, "tls")?
        .secret
        .as_ref()?
        .secret_name
        .clone()
}

/// A Ready pod of the webhook Deployment (its selector's labels, in `namespace`) and the port
/// its `webhook` container serves metrics on (the port named `metrics`).
pub fn serving_pod(deployment: &Deployment, pods: &[Pod]) -> Option<(String, i32)> {
    let spec = deployment.spec.as_ref()?;
    let selector = spec.selector.match_labels.as_ref()?;
    let port = spec
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.args.as_ref().and_then(|a| a.first()).map(String::as_str) == Some("webhook"))?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))?
        .container_port;
    let namespace = deployment.metadata.namespace.as_deref();
    let pod = pods.iter().find(|p| {
        p.metadata.namespace.as_deref() == namespace
            && p.metadata.deletion_timestamp.is_none()
            && is_ready(p)
            && selector
                .iter()
                .all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))
    })?;
    Some((pod.metadata.name.clone()?, port))
}

/// The serving certificate's notAfter from the webhook's metrics (Unix seconds); `None` when the
/// gauge is missing or 0 (the webhook could not read its certificate).
pub fn served_expiry(metrics: &str) -> Option<i64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("warmpool_webhook_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0 && v.is_finite())
        .map(|v| v as i64)
}

/// The pod template's volume `name`: where the chart mounts the certificate and the config.
pub fn volume<'a>(deployment: &'a Deployment, name: &str) -> Option<&'a Volume> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find(|v| v.name == name)
}

/// notAfter of the first certificate in a PEM bundle, Unix seconds.
pub fn not_after(pem: &[u8]) -> Option<i64> {
    let leaf = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    x509_parser::parse_x509_certificate(&leaf)
        .ok()
        .map(|(_, cert)| cert.validity().not_after.timestamp())
}

pub(super) fn webhook(listed: &Listed) -> Webhook {
    let deployment = listed.deployments.as_ref().map(|all| {
        webhook_deployment(all).map(|d| WebhookDeployment {
            name: d.metadata.name.clone().unwrap_or_default(),
            wanted: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        })
    });
    let certificate = |secret: &str, served_by: Option<&String>, not_after: Option<i64>| {
        let not_after = not_after.and_then(|t| Timestamp::from_second(t).ok());
        Some(Certificate {
            secret: secret.to_owned(),
            served_by: served_by.cloned(),
            not_after: not_after.map(|t| t.to_string()),
            days_left: not_after.map(|t| (t - listed.now).get_seconds().div_euclid(86_400)),
        })
    };
    let certificate = match (&listed.tls_secret, &listed.served_certificate) {
        (None, _) => Part::Read(None),
        // The Secret holds the key, so the chart's status role may not read it; a webhook pod
        // says what it serves.
        (Some((name, Part::Unreadable { needs })), Some((pod, served))) => match served {
            Part::Read(expiry) => Part::Read(certificate(name, Some(pod), *expiry)),
            Part::Unreadable { needs: proxy } => Part::Unreadable {
                needs: format!("{needs}, or {proxy}"),
            },
            Part::Failed { .. } => Part::Unreadable {
                needs: needs.clone(),
            },
        },
        (Some((name, secret)), _) => secret.as_ref().map(|secret| {
            let not_after = secret
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get("tls.crt"))
                .and_then(|crt| not_after(&crt.0));
            certificate(name, None, not_after)
        }),
    };
    let configurations = listed.webhook_configurations.as_ref().map(|all| {
        let mut out: Vec<WebhookConfiguration> = all
            .iter()
            .filter(|mwc| is_ours(mwc, &listed.namespace))
            .map(|mwc| {
                let hooks = mwc.webhooks.as_deref().unwrap_or_default();
                let mut policies: Vec<String> = hooks
                    .iter()
                    .map(|h| h.failure_policy.clone().unwrap_or_else(|| "Fail".into()))
                    .collect();
                policies.dedup();
                WebhookConfiguration {
                    name: mwc.metadata.name.clone().unwrap_or_default(),
                    entries: hooks.iter().map(|h| h.name.clone()).collect(),
                    failure_policy: policies,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    });
    Webhook {
        deployment,
        certificate,
        configurations,
    }
}

/// A MutatingWebhookConfiguration of this warmpool: entries named `*.warmpool.io` that call a
/// Service in `namespace`, or (URL-based) leave `namespace` out as the chart's selector does.
pub fn is_ours(
    mwc: &k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
    namespace: &str,
) -> bool {
    mwc.webhooks.iter().flatten().any(|h| {
        let warmpool = h.name.ends_with(".warmpool.io");
        let service = h
            .client_config
            .service
            .as_ref()
            .is_some_and(|s| s.namespace == namespace);
        let excludes = h
            .namespace_selector
            .as_ref()
            .and_then(|s| s.match_expressions.as_ref())
            .is_some_and(|e| {
                e.iter().any(|e| {
                    e.key == "kubernetes.io/metadata.name"
                        && e.operator == "NotIn"
                        && e.values.iter().flatten().any(|v| v == namespace)
                })
            });
        warmpool && (service || (h.client_config.service.is_none() && excludes))
    })
}
