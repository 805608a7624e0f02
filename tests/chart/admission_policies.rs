//! `tenantIsolation`: the chart's ValidatingAdmissionPolicies, enforced by the real API server.

use std::time::Duration;

use serde_json::{Value, json};

use support::chart::{Cluster, all_of, cluster, eventually, helm, render, text, unique};

/// Cluster-scoped objects this test created, deleted when it ends (failing or not).
struct Created<'a>(&'a Cluster, Vec<(String, String)>);

impl Drop for Created<'_> {
    fn drop(&mut self) {
        for (kind, name) in self.1.iter().rev() {
            let _ = self.0.kubectl(
                &["delete", kind, name, "--ignore-not-found", "--wait=false"],
                None,
            );
        }
    }
}

fn create(cluster: &Cluster, created: &mut Created, object: &Value) {
    let kind = object["kind"].as_str().unwrap().to_lowercase();
    let name = object["metadata"]["name"].as_str().unwrap().to_owned();
    cluster.kubectl_ok(&["create", "-f", "-"], Some(&object.to_string()));
    created.1.push((kind, name));
}

/// Runs kubectl; `Ok(stdout)` or `Err(stderr)`.
fn attempt(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let out = cluster.kubectl(args, stdin);
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

fn pod(name: &str, ns: &str, tolerations: Value) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"tolerations": tolerations,
                    "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}})
    .to_string()
}

/// The pool is this test's own (label `warmpool.test/<id>=warm`) and every binding is narrowed to
/// this test's namespaces (label `warmpool.test/vap=<id>`), so that nothing else in the cluster is
/// touched. Then, on the real API server:
/// - a pod outside the tenants that tolerates the pool's taint, or every taint, is refused (a
///   namespace named like a tenant but outside `tenants.namespaceMatchExpressions` included); in
///   a tenant namespace (by name or by label) and in the release namespace it is admitted;
/// - only warmpool's ServiceAccount and the label admins set `warmpool.io/tenant`;
/// - warmpool's own token is refused when it changes a Pod Security label or evicts outside the
///   tenants, and allowed its own label and an eviction in a tenant namespace.
#[test]
fn tenant_isolation_is_enforced_by_the_api_server() {
    let Some(helm) = helm() else { return };
    let Some(cluster) = cluster() else { return };
    let id = unique("wpvap");
    let release = format!("{id}r");
    let release_ns = format!("{id}-system");
    let pool_key = format!("warmpool.test/{id}");
    let docs = render(
        &helm,
        &release,
        &release_ns,
        &[
            "--set",
            "tenantIsolation.enabled=true",
            "--set",
            "tenants.repair=evict",
            "--set-json",
            &format!(r#"tenants.namespacePatterns=["{id}-t-*"]"#),
            // Tenants also carry this test's label and are not frozen.
            "--set-json",
            &format!(
                r#"tenants.namespaceMatchExpressions=[{{"key":"warmpool.test/vap","operator":"In","values":["{id}"]}},{{"key":"warmpool.test/frozen","operator":"DoesNotExist"}}]"#
            ),
            "--set",
            &format!("pool.nodeLabel.key={pool_key}"),
            "--set",
            "pool.nodeLabel.value=warm",
        ],
    );
    let sa = format!("system:serviceaccount:{release_ns}:{release}-warmpool");
    let alice = format!("{id}-alice");
    let scope = json!({"namespaceSelector": {"matchLabels": {"warmpool.test/vap": id}}});

    let mut guards = Vec::new();
    for ns in [
        format!("{id}-t-1"),
        format!("{id}-t-frozen"),
        format!("{id}-optin"),
        format!("{id}-other"),
        release_ns.clone(),
    ] {
        guards.push(cluster.namespace(&ns));
        let mut labels = vec![format!("warmpool.test/vap={id}")];
        if ns.ends_with("-optin") {
            labels.push("warmpool.io/tenant=enabled".into());
        }
        if ns.ends_with("-frozen") {
            labels.push("warmpool.test/frozen=yes".into());
        }
        let mut args = vec!["label", "namespace", ns.as_str()];
        args.extend(labels.iter().map(String::as_str));
        cluster.kubectl_ok(&args, None);
    }
    let mut created = Created(&cluster, Vec::new());
    // warmpool's RBAC (namespaces patch, pods/eviction), and a user who may patch namespaces.
    for kind in ["ClusterRole", "ClusterRoleBinding"] {
        for object in all_of(&docs, kind) {
            if object["metadata"]["name"] == format!("{release}-warmpool") {
                create(&cluster, &mut created, object);
            }
        }
    }
    let alice_role = format!("{id}-namespace-patcher");
    create(
        &cluster,
        &mut created,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": alice_role},
                "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "patch"]}]}),
    );
    create(
        &cluster,
        &mut created,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": alice_role},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": alice_role},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": alice}]}),
    );
    let policies = all_of(&docs, "ValidatingAdmissionPolicy");
    assert_eq!(policies.len(), 3);
    for policy in policies {
        create(&cluster, &mut created, policy);
    }
    for binding in all_of(&docs, "ValidatingAdmissionPolicyBinding") {
        let mut binding = binding.clone();
        binding["spec"]["matchResources"] = scope.clone();
        create(&cluster, &mut created, &binding);
    }

    // Pods and the warm pool's taint.
    let pool =
        json!([{"key": pool_key, "operator": "Equal", "value": "warm", "effect": "NoSchedule"}]);
    let every = json!([{"operator": "Exists"}]);
    let other_key = json!([{"key": "example.com/gpu", "operator": "Exists"}]);
    let cases = [
        (format!("{id}-other"), pool.clone(), false),
        (format!("{id}-other"), every.clone(), false),
        (format!("{id}-other"), other_key, true),
        (format!("{id}-other"), json!([]), true),
        (format!("{id}-t-1"), pool.clone(), true),
        (format!("{id}-t-1"), every, true),
        // Named like a tenant, outside tenants.namespaceMatchExpressions: not a tenant.
        (format!("{id}-t-frozen"), pool.clone(), false),
        (format!("{id}-optin"), pool.clone(), true),
        (release_ns.clone(), pool.clone(), true),
    ];
    for (ns, tolerations, admitted) in &cases {
        let manifest = pod("probe", ns, tolerations.clone());
        // A new policy takes effect once the API server's policy cache has it: poll.
        eventually(
            &format!("a pod in {ns} tolerating {tolerations} admitted={admitted}"),
            Duration::from_secs(30),
            || match attempt(
                &cluster,
                &["create", "--dry-run=server", "-f", "-"],
                Some(&manifest),
            ) {
                Ok(_) => admitted.then_some(()),
                Err(e) if e.contains("is not a warmpool tenant") => (!admitted).then_some(()),
                // The namespace's default ServiceAccount may not exist yet.
                Err(e) if e.contains("serviceaccount") => None,
                Err(e) => panic!("unexpected refusal in {ns}: {e}"),
            },
        );
    }

    // Who may set warmpool.io/tenant.
    let other = format!("{id}-other");
    // `kubectl label|annotate namespace <other> <what> --as <who>`.
    let write_as = |verb: &str, what: &str, who: &str| {
        attempt(
            &cluster,
            &[verb, "namespace", &other, what, "--as", who],
            None,
        )
    };
    let refused = write_as("label", "warmpool.io/tenant=enabled", &alice)
        .expect_err("alice may not enrol a namespace");
    assert!(
        refused.contains("only warmpool and the platform"),
        "{refused}"
    );
    write_as("label", "team=blue", &alice).expect("other labels are not warmpool's business");
    write_as("label", "warmpool.io/tenant=enabled", &sa).expect("warmpool may enrol");
    write_as("annotate", "warmpool.io/start=warm", &sa)
        .expect("warmpool may annotate its own keys");
    // ... and nothing else, even with a token that may patch any namespace.
    let refused = write_as(
        "label",
        "pod-security.kubernetes.io/enforce=privileged",
        &sa,
    )
    .expect_err("warmpool's token may not relax Pod Security");
    assert!(
        refused.contains("only its own (warmpool.io/) labels"),
        "{refused}"
    );
    cluster.kubectl_ok(&["label", "namespace", &other, "warmpool.io/tenant-"], None);

    // Evictions: only in tenant namespaces.
    let tenant = format!("{id}-t-1");
    for ns in [&other, &tenant] {
        let manifest = pod("victim", ns, json!([]));
        eventually(
            &format!("the victim pod in {ns}"),
            Duration::from_secs(30),
            || attempt(&cluster, &["create", "-f", "-"], Some(&manifest)).ok(),
        );
    }
    let eviction = |ns: &str| {
        let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                          "metadata": {"name": "victim", "namespace": ns}})
        .to_string();
        attempt(
            &cluster,
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/pods/victim/eviction"),
                "-f",
                "-",
                "--as",
                &sa,
            ],
            Some(&body),
        )
    };
    let refused = eviction(&other).expect_err("no eviction outside the tenants");
    assert!(refused.contains("only in tenant namespaces"), "{refused}");
    eviction(&tenant).expect("an eviction in a tenant namespace");
    drop(created);
    drop(guards);
}
