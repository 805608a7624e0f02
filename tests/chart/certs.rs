//! The certificate modes (helm, cert-manager, provided) render their objects.

use serde_json::{Value, json};

use crate::{VARIANTS, s, strings};
use support::chart::{all_of, find, helm, render};

/// base64("-----BEGIN CERTIFICATE-----\n"): a caBundle for certs.mode=provided.
const SOME_CA: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==";
#[test]
fn certificate_modes_render_their_objects() {
    let Some(helm) = helm() else { return };
    // helm: a kubernetes.io/tls Secret whose CA is the caBundle.
    let docs = render(&helm, "wp", "warmpool-system", &[]);
    let secret = find(&docs, "Secret", Some("wp-warmpool-tls"));
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(s(&secret["data"][key]).len() > 100, "{key}");
    }
    let volume = |docs: &[Value]| -> Value {
        find(docs, "Deployment", None)["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "tls")
            .expect("tls volume")["secret"]["secretName"]
            .clone()
    };
    assert_eq!(volume(&docs), "wp-warmpool-tls");
    assert!(all_of(&docs, "Certificate").is_empty());

    // cert-manager: self-signed Issuer → CA Certificate → CA Issuer → serving Certificate, and
    // the CA injected from the serving Certificate.
    let docs = render(
        &helm,
        "wp",
        "warmpool-system",
        &["--set", "certs.mode=cert-manager"],
    );
    assert!(
        all_of(&docs, "Secret").is_empty(),
        "cert-manager writes the Secret"
    );
    let selfsigned = find(&docs, "Issuer", Some("wp-warmpool-selfsigned"));
    assert_eq!(selfsigned["spec"], json!({"selfSigned": {}}));
    let ca = find(&docs, "Certificate", Some("wp-warmpool-ca"));
    assert_eq!(ca["spec"]["isCA"], true);
    assert_eq!(ca["spec"]["issuerRef"]["name"], "wp-warmpool-selfsigned");
    let ca_issuer = find(&docs, "Issuer", Some("wp-warmpool-ca"));
    assert_eq!(
        ca_issuer["spec"]["ca"]["secretName"],
        ca["spec"]["secretName"]
    );
    let serving = find(&docs, "Certificate", Some("wp-warmpool-serving"));
    assert_eq!(serving["spec"]["issuerRef"]["name"], "wp-warmpool-ca");
    assert_eq!(serving["spec"]["secretName"], volume(&docs));
    assert_eq!(
        strings(&serving["spec"]["dnsNames"]),
        [
            "wp-warmpool",
            "wp-warmpool.warmpool-system",
            "wp-warmpool.warmpool-system.svc",
            "wp-warmpool.warmpool-system.svc.cluster.local"
        ]
    );
    let mwc = find(&docs, "MutatingWebhookConfiguration", None);
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "warmpool-system/wp-warmpool-serving"
    );
    for entry in mwc["webhooks"].as_array().unwrap() {
        assert!(
            entry["clientConfig"].get("caBundle").is_none(),
            "injected, not rendered"
        );
    }

    // provided: the user's Secret and CA.
    let docs = render(&helm, "wp", "warmpool-system", VARIANTS[2].1);
    assert!(all_of(&docs, "Secret").is_empty());
    assert_eq!(volume(&docs), "my-webhook-tls");
    let mwc = find(&docs, "MutatingWebhookConfiguration", None);
    for entry in mwc["webhooks"].as_array().unwrap() {
        assert_eq!(entry["clientConfig"]["caBundle"], SOME_CA);
    }
}
