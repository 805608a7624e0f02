//! `warmpool reconcile` against the real local control plane (`tests/cluster/cluster.sh up`):
//! the real binary as a child process, asserted through the API with kube-rs, polling with a
//! deadline. Every test has its own namespace, tenant prefix, pool label and Lease, so tests
//! share one cluster. Without a control plane the tests print SKIP (and fail when CI=true).

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use support::cluster::{client, eventually};
use support::fakelet::{FakeNode, create_node};
use support::reconciler::{NodeGuard, Run, cached_images, kubectl};

use super::BIN;
use support::reconciler::config;
use warmpool::config::{Config, Slot, SpareSlots};
const TENANT_LABEL: &str = "warmpool.io/tenant";
const PREWARMER: &str = "warmpool-prewarmer";
const IMAGE_CACHE: &str = "warmpool-image-cache";
const PRIORITY_CLASS: &str = "warmpool-placeholder";
const LEASE: &str = "warmpool-reconciler";
/// "Repaired within seconds".
const REPAIR: Duration = Duration::from_secs(10);
const START: Duration = Duration::from_secs(60);

async fn tenant_label(client: &Client, ns: &str) -> Option<String> {
    let got = Api::<Namespace>::all(client.clone()).get(ns).await.ok()?;
    got.labels().get(TENANT_LABEL).cloned()
}

async fn wait_enrolled(client: &Client, ns: &str) {
    eventually(
        &format!("{ns} labelled {TENANT_LABEL}=enabled"),
        START,
        || async { (tenant_label(client, ns).await.as_deref() == Some("enabled")).then_some(()) },
    )
    .await;
}

fn prewarmers(run: &Run) -> Api<Deployment> {
    Api::namespaced(run.client.clone(), &run.namespace)
}

fn caches(run: &Run) -> Api<DaemonSet> {
    Api::namespaced(run.client.clone(), &run.namespace)
}

/// The prewarmer's (cpu, memory) requests.
fn requests(d: &Deployment) -> Option<(String, String)> {
    let spec = d.spec.as_ref()?.template.spec.as_ref()?;
    let r = spec
        .containers
        .first()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?;
    Some((r.get("cpu")?.0.clone(), r.get("memory")?.0.clone()))
}

fn owner_refs(refs: &Option<Vec<OwnerReference>>) -> Vec<serde_json::Value> {
    refs.iter()
        .flatten()
        .map(|r| serde_json::to_value(r).expect("json"))
        .collect()
}

fn managed_by_warmpool<K: Resource>(o: &K) -> bool {
    o.meta()
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .map(String::as_str)
        == Some("warmpool")
}

fn applied_by_warmpool<K: Resource>(o: &K) -> bool {
    o.meta().managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some("warmpool") && m.operation.as_deref() == Some("Apply")
    })
}

async fn lease_holder(run: &Run) -> Option<String> {
    let lease = Api::<Lease>::namespaced(run.client.clone(), &run.namespace)
        .get_opt(LEASE)
        .await
        .ok()??;
    lease.spec?.holder_identity
}

#[tokio::test]
async fn enrols_matching_namespaces_keeps_opt_outs_and_records_an_event() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    let matching = run.tenant("1");
    let opted_out = run.tenant("2");
    let unrelated = format!("{}-other", run.id);
    run.create_namespace(&matching, &[("team", "a")]).await;
    run.create_namespace(&opted_out, &[(TENANT_LABEL, "disabled")])
        .await;
    run.create_namespace(&unrelated, &[]).await;

    let rec = run.spawn("a", &[], &[]);
    wait_enrolled(&client, &matching).await;
    rec.wait_ready(START).await;
    // A tenant that appears later is enrolled too; by then the first list has long been
    // processed, so what was left alone stays alone.
    let later = run.tenant("3");
    run.create_namespace(&later, &[]).await;
    wait_enrolled(&client, &later).await;
    assert_eq!(
        tenant_label(&client, &opted_out).await.as_deref(),
        Some("disabled"),
        "the opt-out must never be overwritten"
    );
    assert_eq!(tenant_label(&client, &unrelated).await, None);
    assert_eq!(
        tenant_label(&client, &run.namespace).await,
        None,
        "own namespace"
    );
    let ns = Api::<Namespace>::all(client.clone())
        .get(&matching)
        .await
        .expect("ns");
    assert_eq!(
        ns.labels().get("team").map(String::as_str),
        Some("a"),
        "other labels kept"
    );

    // An Event on the namespace says it was enrolled.
    let events: Api<Event> = Api::namespaced(client.clone(), &matching);
    let note = eventually(&format!("Enrolled event in {matching}"), START, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            let regarding = e.regarding.as_ref()?;
            (e.reason.as_deref() == Some("Enrolled")
                && regarding.kind.as_deref() == Some("Namespace")
                && regarding.name.as_deref() == Some(matching.as_str()))
            .then(|| e.note.clone().unwrap_or_default())
        })
    })
    .await;
    assert!(note.contains(&run.tenant("*")), "{note}");
    run.cleanup().await;
}

/// The field managers that own a namespace's tenant label, as the API server records them.
async fn label_managers(client: &Client, ns: &str) -> Vec<String> {
    let got = Api::<Namespace>::all(client.clone())
        .get(ns)
        .await
        .expect("namespace");
    got.managed_fields()
        .iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| {
                    f.0.get("f:metadata")?
                        .get("f:labels")?
                        .get("f:warmpool.io/tenant")
                })
                .is_some()
        })
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// The note of the first Event with `reason` about namespace `ns`, recorded in it.
async fn event_note(client: &Client, ns: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{reason} event in {ns}"), START, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find_map(|e| {
            let regarding = e.regarding.as_ref()?;
            (e.reason.as_deref() == Some(reason)
                && regarding.kind.as_deref() == Some("Namespace")
                && regarding.name.as_deref() == Some(ns))
            .then(|| e.note.clone().unwrap_or_default())
        })
    })
    .await
}

#[tokio::test]
async fn unenrols_what_it_enrolled_once_the_patterns_change_and_never_a_persons_label() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    // The run's patterns are `<id>-demo-*`.
    let enrolled = run.tenant("1");
    let person = run.tenant("2");
    let opted_out = run.tenant("3");
    let payments = format!("{}-payments", run.id);
    for ns in [&enrolled, &person, &opted_out, &payments] {
        run.create_namespace(ns, &[]).await;
    }
    // A person's labels, as people write them.
    kubectl(&["label", "namespace", &person, "warmpool.io/tenant=enabled"]);
    kubectl(&[
        "label",
        "namespace",
        &payments,
        "warmpool.io/tenant=enabled",
    ]);
    kubectl(&[
        "label",
        "namespace",
        &opted_out,
        "warmpool.io/tenant=disabled",
    ]);

    let mut rec = run.spawn("a", &[], &[]);
    wait_enrolled(&client, &enrolled).await;
    rec.wait_ready(START).await;
    assert_eq!(
        label_managers(&client, &enrolled).await,
        vec![format!("warmpool@{}", run.namespace)],
        "warmpool's label is an apply by its own field manager"
    );
    assert_eq!(
        label_managers(&client, &person).await,
        vec!["kubectl-label"]
    );
    rec.terminate();

    // The patterns change from demo-* to team-*, and the reconciler restarts with them: what it
    // knows of its own labels is what the API server kept.
    let team = format!("{}-team-1", run.id);
    run.set_patterns(&[&format!("{}-team-*", run.id)]);
    run.create_namespace(&team, &[]).await;
    let rec = run.spawn("a", &[], &[]);
    wait_enrolled(&client, &team).await;
    let started = Instant::now();
    eventually(&format!("{enrolled} un-enrolled"), START, || async {
        tenant_label(&client, &enrolled)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    eprintln!(
        "un-enrolled {:?} after the team-* tenant was enrolled",
        started.elapsed()
    );
    let note = event_note(&client, &enrolled, "Unenrolled").await;
    assert!(note.contains(&format!("{}-team-*", run.id)), "{note}");
    // A namespace that appears later is enrolled: by then the first list has long been
    // processed, so what was left alone stays alone.
    let later = format!("{}-team-2", run.id);
    run.create_namespace(&later, &[]).await;
    wait_enrolled(&client, &later).await;
    assert_eq!(
        tenant_label(&client, &person).await.as_deref(),
        Some("enabled"),
        "a person's label on a former pattern match stays"
    );
    assert_eq!(
        tenant_label(&client, &payments).await.as_deref(),
        Some("enabled"),
        "a person's opt-in stays"
    );
    assert_eq!(
        tenant_label(&client, &opted_out).await.as_deref(),
        Some("disabled"),
        "an opt-out stays"
    );
    assert_eq!(
        label_managers(&client, &person).await,
        vec!["kubectl-label"]
    );
    // At least this one (a label another test left by 0.1.0's field manager would count too).
    let unenrolled = rec
        .metric("warmpool_reconcile_unenrolled_namespaces_total")
        .await;
    assert!(unenrolled >= Some(1.0), "{unenrolled:?}");
    run.cleanup().await;
}

#[tokio::test]
async fn creates_the_priority_class_prewarmer_and_image_cache() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(
        &client,
        BIN.as_ref(),
        config(|c| {
            c.prewarmer.spare_slots = SpareSlots::Fixed(2);
            c.image_cache.discover = false;
            c.image_cache.images = vec!["example.com/configured:1".into()];
            c.image_cache.image_pull_secrets = vec!["regcred".into()];
            c.image_cache.tool_image = "example.com/warmpool:e2e".into();
        }),
    )
    .await;
    let rec = run.spawn("a", &[], &[]);
    rec.wait_ready(START).await;

    let pc = Api::<PriorityClass>::all(client.clone())
        .get(PRIORITY_CLASS)
        .await
        .expect("PriorityClass");
    assert_eq!(pc.value, -10);
    assert_eq!(pc.preemption_policy.as_deref(), Some("Never"));
    assert_ne!(pc.global_default, Some(true));
    assert!(managed_by_warmpool(&pc) && applied_by_warmpool(&pc));
    assert!(pc.metadata.owner_references.is_none());

    let d = prewarmers(&run).get(PREWARMER).await.expect("prewarmer");
    assert!(managed_by_warmpool(&d) && applied_by_warmpool(&d));
    assert!(
        d.metadata.owner_references.is_none(),
        "no owner when run from a kubeconfig"
    );
    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    let template = &spec.template;
    let annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone());
    assert_eq!(
        annotations
            .unwrap_or_default()
            .get("karpenter.sh/do-not-disrupt"),
        None,
        "prewarmer.doNotDisrupt is off by default"
    );
    let pod = serde_json::to_value(template.spec.as_ref().expect("pod spec")).expect("json");
    assert_eq!(pod["priorityClassName"], PRIORITY_CLASS);
    assert_eq!(pod["terminationGracePeriodSeconds"], 0);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": "workload-type", "operator": "In", "values": [run.pool]}]}])
    );
    assert_eq!(
        pod["tolerations"],
        json!([{"key": "workload-type", "operator": "Equal", "value": run.pool, "effect": "NoSchedule"}])
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let pause = &pod["containers"][0];
    assert_eq!(pause["image"], "registry.k8s.io/pause:3.10");
    assert_eq!(
        pause["resources"]["requests"],
        json!({"cpu": "640m", "memory": "2150Mi"})
    );
    assert_eq!(pause["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pause["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        pause["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    assert_eq!(pause["securityContext"]["runAsUser"], 65535);

    let ds = caches(&run).get(IMAGE_CACHE).await.expect("image cache");
    assert!(managed_by_warmpool(&ds) && applied_by_warmpool(&ds));
    let pod = serde_json::to_value(
        ds.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec"),
    )
    .expect("json");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["values"],
        json!([run.pool])
    );
    let init = pod["initContainers"].as_array().expect("init containers");
    assert_eq!(
        init.len(),
        1,
        "only the installer runs before the cached images"
    );
    assert_eq!(init[0]["image"], "example.com/warmpool:e2e");
    assert_eq!(init[0]["args"], json!(["install-noop", "/warmpool-cache"]));
    assert_eq!(cached_images(&ds), vec!["example.com/configured:1"]);
    assert_eq!(pod["containers"][0]["image"], "registry.k8s.io/pause:3.10");
    assert_eq!(
        pod["containers"][1]["command"],
        json!(["/warmpool-cache/warmpool", "hold"])
    );
    assert_eq!(pod["containers"][1]["imagePullPolicy"], "IfNotPresent");

    assert_eq!(rec.metric("warmpool_reconcile_leader").await, Some(1.0));
    assert_eq!(
        rec.metric("warmpool_reconcile_spare_slots").await,
        Some(2.0)
    );
    assert_eq!(
        rec.metric("warmpool_reconcile_cached_images").await,
        Some(1.0)
    );
    let (_, metrics) = rec.get("/metrics").await.expect("metrics");
    assert!(
        metrics.contains(r#"warmpool_reconcile_runs_total{target="deployment"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("warmpool_reconcile_duration_seconds_bucket"),
        "{metrics}"
    );
    run.cleanup().await;
}

#[tokio::test]
async fn an_object_is_written_once_and_not_again_when_its_own_update_comes_back() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    // Nothing that changes: no discovery, a fixed slot.
    let run = Run::new(
        &client,
        BIN.as_ref(),
        config(|c| c.image_cache.discover = false),
    )
    .await;
    let rec = run.spawn("a", &["--resync", "10m"], &[]);
    rec.wait_ready(START).await;
    let series = |kind: &str, target: &str| {
        format!("warmpool_reconcile_{kind}_total{{target=\"{target}\"}}")
    };
    // Each write comes back through the drift watch (a new generation, then the controllers'
    // status and annotations): every time the reconciler finds the object as it wrote it.
    for target in ["deployment", "daemonset"] {
        eventually(
            &format!("the {target} found unchanged after its first write"),
            START,
            || async { (rec.metric(&series("unchanged", target)).await? >= 1.0).then_some(()) },
        )
        .await;
    }
    let d = prewarmers(&run).get(PREWARMER).await.expect("prewarmer");
    eventually(
        "the Deployment controller has seen the prewarmer",
        START,
        || async {
            let d = prewarmers(&run).get(PREWARMER).await.ok()?;
            (d.status?.observed_generation == d.metadata.generation).then_some(())
        },
    )
    .await;
    for target in ["deployment", "daemonset"] {
        assert_eq!(
            rec.metric(&series("runs", target)).await,
            Some(1.0),
            "{target} written more than once:\n{}",
            rec.logs()
        );
    }
    assert_eq!(d.metadata.generation, Some(1), "one spec written");
    run.cleanup().await;
}

#[tokio::test]
async fn repairs_deleted_scaled_and_edited_objects() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    let rec = run.spawn("a", &[], &[]);
    rec.wait_ready(START).await;
    let deployments = prewarmers(&run);
    let daemon_sets = caches(&run);

    // Deleted: back, as a new object.
    let old = deployments.get(PREWARMER).await.expect("prewarmer").uid();
    deployments
        .delete(PREWARMER, &DeleteParams::default())
        .await
        .expect("delete");
    let started = Instant::now();
    eventually("prewarmer re-created", REPAIR, || async {
        let d = deployments.get_opt(PREWARMER).await.ok()??;
        (d.uid() != old).then_some(())
    })
    .await;
    eprintln!("deleted prewarmer re-created in {:?}", started.elapsed());

    // Scaled to 0 (through the scale subresource, as `kubectl scale` does): back to 1.
    deployments
        .patch_scale(
            PREWARMER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("scale to 0");
    let started = Instant::now();
    eventually("prewarmer scaled back to 1", REPAIR, || async {
        let d = deployments.get(PREWARMER).await.ok()?;
        (d.spec?.replicas == Some(1)).then_some(())
    })
    .await;
    eprintln!("scaled-down prewarmer restored in {:?}", started.elapsed());

    // Edited: the cache's pause image changed and its requests dropped.
    let edit = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "pause", "image": "example.com/not-pause:1"}
    ]}}}});
    daemon_sets
        .patch(
            IMAGE_CACHE,
            &PatchParams::default(),
            &Patch::Strategic(edit),
        )
        .await
        .expect("edit image cache");
    let started = Instant::now();
    eventually("image cache edit reverted", REPAIR, || async {
        let ds = daemon_sets.get(IMAGE_CACHE).await.ok()?;
        let spec = ds.spec?.template.spec?;
        (spec.containers[0].image.as_deref() == Some("registry.k8s.io/pause:3.10")).then_some(())
    })
    .await;
    eprintln!("edited image cache restored in {:?}", started.elapsed());

    // Deleted: back.
    let old = daemon_sets.get(IMAGE_CACHE).await.expect("cache").uid();
    daemon_sets
        .delete(IMAGE_CACHE, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("image cache re-created", REPAIR, || async {
        let ds = daemon_sets.get_opt(IMAGE_CACHE).await.ok()??;
        (ds.uid() != old).then_some(())
    })
    .await;

    // The PriorityClass's managed-by label removed: back. (It is not deleted here: other tests
    // running at the same time use it.)
    let classes: Api<PriorityClass> = Api::all(client.clone());
    classes
        .patch(
            PRIORITY_CLASS,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}})),
        )
        .await
        .expect("edit PriorityClass");
    eventually("PriorityClass label restored", REPAIR, || async {
        managed_by_warmpool(&classes.get(PRIORITY_CLASS).await.ok()?).then_some(())
    })
    .await;
    run.cleanup().await;
}

#[tokio::test]
async fn images_of_new_tenant_pods_join_the_cache() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(
        &client,
        BIN.as_ref(),
        config(|c| {
            c.image_cache.images = Vec::new();
            c.image_cache.max_images = 200;
        }),
    )
    .await;
    let rec = run.spawn("a", &[], &[]);
    rec.wait_ready(START).await;
    let id = &run.id;
    let web = format!("example.com/{id}/web:1");
    let agent = format!("example.com/{id}/agent:2");
    let tenant = run.tenant("1");
    run.create_namespace(&tenant, &[]).await;
    run.create_running_pod(
        &tenant,
        "web",
        json!({"initContainers": [{"name": "agent", "image": agent}],
               "containers": [{"name": "web", "image": web}]}),
    )
    .await;
    // Not discovered: a pod whose container never got its image (a typo, a private image: the
    // kubelet cannot pull it), and a pod that names pull secrets (its images may be private).
    run.create_pod(
        &tenant,
        "backoff",
        json!({"containers": [{"name": "x", "image": format!("example.com/{id}/typo:1")}]}),
    )
    .await;
    run.create_running_pod(
        &tenant,
        "private",
        json!({"imagePullSecrets": [{"name": "theirs"}],
               "containers": [{"name": "x", "image": format!("example.com/{id}/private:1")}]}),
    )
    .await;
    // Pods outside tenants are not looked at: an opted-out namespace, an unrelated one.
    let opted_out = run.tenant("2");
    run.create_namespace(&opted_out, &[(TENANT_LABEL, "disabled")])
        .await;
    run.create_running_pod(
        &opted_out,
        "x",
        json!({"containers": [{"name": "x", "image": format!("example.com/{id}/optout:1")}]}),
    )
    .await;
    let unrelated = format!("{id}-other");
    run.create_namespace(&unrelated, &[]).await;
    run.create_running_pod(
        &unrelated,
        "x",
        json!({"containers": [{"name": "x", "image": format!("example.com/{id}/other:1")}]}),
    )
    .await;

    let started = Instant::now();
    let images = eventually("the tenant's images in the cache", START, || async {
        let images = cached_images(&caches(&run).get(IMAGE_CACHE).await.ok()?);
        (images.contains(&web) && images.contains(&agent)).then_some(images)
    })
    .await;
    eprintln!("tenant images cached in {:?}", started.elapsed());
    let mine: Vec<&String> = images.iter().filter(|i| i.contains(id.as_str())).collect();
    assert_eq!(
        mine,
        vec![&agent, &web],
        "only images tenants' containers run, no duplicates, none from a pod with pull secrets"
    );
    let mut sorted = images.clone();
    sorted.sort();
    assert_eq!(
        images, sorted,
        "sorted, so that the same set never rolls the DaemonSet"
    );

    // A namespace that opts in by label counts as well.
    let opted_in = format!("{id}-payments");
    let pay = format!("example.com/{id}/pay:3");
    run.create_namespace(&opted_in, &[(TENANT_LABEL, "enabled")])
        .await;
    run.create_running_pod(
        &opted_in,
        "pay",
        json!({"containers": [{"name": "pay", "image": pay}]}),
    )
    .await;
    eventually(
        "the opted-in tenant's image in the cache",
        START,
        || async {
            let images = cached_images(&caches(&run).get(IMAGE_CACHE).await.ok()?);
            let mine: Vec<&String> = images.iter().filter(|i| i.contains(id.as_str())).collect();
            (mine == vec![&agent, &pay, &web]).then_some(())
        },
    )
    .await;
    run.cleanup().await;
}

#[tokio::test]
async fn the_auto_slot_follows_the_largest_tenant() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(
        &client,
        BIN.as_ref(),
        config(|c| c.prewarmer.slot = Slot::Auto),
    )
    .await;
    let rec = run.spawn("a", &[], &[]);
    rec.wait_ready(START).await;
    let res = |cpu: &str, memory: &str| json!({"requests": {"cpu": cpu, "memory": memory}});
    // Sizes far above any other test's tenants (labelled tenants of other runs count too).
    // Tenant a: 5300m/3Gi + 3200m/1Gi = 8500m / 4Gi.
    let a = run.tenant("a");
    run.create_namespace(&a, &[]).await;
    for (name, cpu, memory) in [("one", "5300m", "3Gi"), ("two", "3200m", "1Gi")] {
        let container =
            json!({"name": "c", "image": "example.com/a:1", "resources": res(cpu, memory)});
        run.create_running_pod(&a, name, json!({"containers": [container]}))
            .await;
    }
    // Tenant b: an init container of 7900m/64Mi before apps of 100m/13Gi and 100m/1Gi:
    // 7900m / 14Gi as the scheduler counts it (the init container's CPU, the apps' memory).
    let b = run.tenant("b");
    run.create_namespace(&b, &[]).await;
    let app = |name: &str, memory: &str| json!({"name": name, "image": "example.com/b:1", "resources": res("100m", memory)});
    run.create_running_pod(
        &b,
        "one",
        json!({
            "initContainers": [{"name": "i", "image": "example.com/b-init:1", "resources": res("7900m", "64Mi")}],
            "containers": [app("c1", "13Gi"), app("c2", "1Gi")],
        }),
    )
    .await;
    // The largest tenant, resource by resource: 8500m (a) and 14Gi (b; written 14336Mi, which
    // the API server spells 14Gi).
    let started = Instant::now();
    eventually(
        "the prewarmer sized from the largest tenant",
        START,
        || async {
            let d = prewarmers(&run).get(PREWARMER).await.ok()?;
            (requests(&d)? == ("8500m".into(), "14Gi".into())).then_some(())
        },
    )
    .await;
    eprintln!("slot followed the tenants in {:?}", started.elapsed());
    assert_eq!(
        rec.metric("warmpool_reconcile_slot_cpu_millicores").await,
        Some(8500.0)
    );
    run.cleanup().await;
}

#[tokio::test]
async fn the_auto_slot_never_asks_for_more_than_the_largest_warm_node() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(
        &client,
        BIN.as_ref(),
        config(|c| c.prewarmer.slot = Slot::Auto),
    )
    .await;
    // Two warm nodes of this run's pool (label and taint), the larger with 4 CPUs and 8 GiB.
    let mut guards = Vec::new();
    for (suffix, cpu, memory) in [("small", "2", "12Gi"), ("large", "4", "8Gi")] {
        let name = format!("{}-warm-{suffix}", run.id);
        guards.push(NodeGuard(name.clone()));
        create_node(
            &client,
            &FakeNode {
                name: &name,
                labels: &[("workload-type", &run.pool)],
                taints: &[("workload-type", &run.pool, "NoSchedule")],
                cpu,
                memory,
            },
        )
        .await
        .expect("a warm node");
    }
    let rec = run.spawn("a", &[], &[]);
    rec.wait_ready(START).await;
    // A tenant larger than either node: 9 CPUs, 12 GiB.
    let tenant = run.tenant("big");
    run.create_namespace(&tenant, &[]).await;
    run.create_running_pod(
        &tenant,
        "big",
        json!({"containers": [{"name": "c", "image": "example.com/big:1",
               "resources": {"requests": {"cpu": "9", "memory": "12Gi"}}}]}),
    )
    .await;
    // Fitted to the node that keeps the most of it (4 of 9 CPUs beats 2 of 9), not 9 CPUs that
    // no node could ever hold.
    eventually(
        "the prewarmer fitted to the larger warm node",
        START,
        || async {
            let d = prewarmers(&run).get(PREWARMER).await.ok()?;
            (requests(&d)? == ("4".into(), "8Gi".into())).then_some(())
        },
    )
    .await;
    assert_eq!(
        rec.metric("warmpool_reconcile_slot_cpu_millicores").await,
        Some(4000.0)
    );
    drop(guards);
    run.cleanup().await;
}

#[tokio::test]
async fn a_standby_takes_over_and_repairs_when_the_leader_dies() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    let lease = ["--lease-duration", "4s"];
    let mut a = run.spawn("a", &lease, &[]);
    a.wait_ready(START).await;
    assert_eq!(lease_holder(&run).await.as_deref(), Some("a"));
    let mut b = run.spawn("b", &lease, &[]);
    b.wait_ready(START).await;
    assert_eq!(
        b.metric("warmpool_reconcile_leader").await,
        Some(0.0),
        "b stands by"
    );
    assert_eq!(lease_holder(&run).await.as_deref(), Some("a"));

    // The leader dies without giving the Lease up; its prewarmer is deleted at once, so only
    // the new leader can repair it.
    a.kill();
    let died = Instant::now();
    prewarmers(&run)
        .delete(PREWARMER, &DeleteParams::default())
        .await
        .expect("delete");
    eventually("b holds the lease", Duration::from_secs(30), || async {
        (lease_holder(&run).await.as_deref() == Some("b")).then_some(())
    })
    .await;
    eventually("b re-created the prewarmer", REPAIR, || async {
        prewarmers(&run).get_opt(PREWARMER).await.ok()?.map(|_| ())
    })
    .await;
    eprintln!("b took over and repaired {:?} after a died", died.elapsed());
    assert_eq!(b.metric("warmpool_reconcile_leader").await, Some(1.0));
    assert!(b.logs().contains("taking the lease"), "{}", b.logs());
    b.terminate();
    run.cleanup().await;
}

#[tokio::test]
async fn a_leader_that_stops_gives_the_lease_up_at_once() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    // A long lease: a take-over before it expires proves that it was given up.
    let lease = ["--lease-duration", "60s"];
    let mut a = run.spawn("a", &lease, &[]);
    a.wait_ready(START).await;
    let b = run.spawn("b", &lease, &[]);
    b.wait_ready(START).await;
    assert_eq!(lease_holder(&run).await.as_deref(), Some("a"));
    let stopped = Instant::now();
    a.terminate();
    assert!(a.logs().contains("released the lease"), "{}", a.logs());
    eventually("b holds the lease", Duration::from_secs(20), || async {
        (lease_holder(&run).await.as_deref() == Some("b")).then_some(())
    })
    .await;
    eprintln!("b took over {:?} after a stopped", stopped.elapsed());
    eventually("b is the leader", Duration::from_secs(10), || async {
        (b.metric("warmpool_reconcile_leader").await == Some(1.0)).then_some(())
    })
    .await;
    run.cleanup().await;
}

#[tokio::test]
async fn a_replica_whose_lease_is_taken_stops_writing() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    let a = run.spawn("a", &["--lease-duration", "4s"], &[]);
    a.wait_ready(START).await;
    // Someone else takes the Lease (as a partitioned peer might) for a long time.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &run.namespace);
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 3600}}),
            ),
        )
        .await
        .expect("take the lease");
    eventually("a no longer leads", Duration::from_secs(10), || async {
        (a.metric("warmpool_reconcile_leader").await == Some(0.0)).then_some(())
    })
    .await;
    // What it would have repaired is broken now, and stays so while a is not the leader: the
    // intruder holds the Lease for a few seconds more, then gives it up.
    prewarmers(&run)
        .delete(PREWARMER, &DeleteParams::default())
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_secs(3)).await;
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"holderIdentity": null}})),
        )
        .await
        .expect("give the lease up");
    let recreated = eventually("a leads again and repairs", REPAIR, || async {
        prewarmers(&run).get_opt(PREWARMER).await.ok()?
    })
    .await;
    let acquired = Api::<Lease>::namespaced(client.clone(), &run.namespace)
        .get(LEASE)
        .await
        .expect("lease")
        .spec
        .and_then(|s| Some((s.holder_identity?, s.acquire_time?)))
        .expect("held");
    assert_eq!(acquired.0, "a");
    let created = recreated.metadata.creation_timestamp.expect("created").0;
    // Second precision on creationTimestamp: the repair came after a took the Lease back, not
    // in the 3 s while the intruder held it.
    assert!(
        created.as_second() >= acquired.1.0.as_second(),
        "a wrote without the lease (created {created}, lease re-acquired {}):\n{}",
        acquired.1.0,
        a.logs()
    );
    assert!(
        a.logs().contains("lease lost: stopped writing"),
        "{}",
        a.logs()
    );
    run.cleanup().await;
}

#[tokio::test]
async fn objects_are_owned_by_warmpools_deployment_when_run_in_its_pod() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let run = Run::new(&client, BIN.as_ref(), Config::default()).await;
    // warmpool's own Deployment, as the chart installs it (its pod need not run: the
    // reconciler below plays it, by name, through POD_NAME/POD_NAMESPACE).
    let own: Api<Deployment> = Api::namespaced(client.clone(), &run.namespace);
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "warmpool"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "warmpool-under-test"}},
            "template": {
                "metadata": {"labels": {"app": "warmpool-under-test"}},
                "spec": {"containers": [{"name": "warmpool", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }))
    .expect("deployment");
    let owner = own
        .create(&PostParams::default(), &deployment)
        .await
        .expect("own Deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &run.namespace);
    let pod = eventually("the Deployment's pod", START, || async {
        let list = pods
            .list(&ListParams::default().labels("app=warmpool-under-test"))
            .await
            .ok()?;
        list.items.into_iter().next().map(|p| p.name_any())
    })
    .await;

    let mut rec = run.spawn(
        "in-pod",
        &[],
        &[("POD_NAME", &pod), ("POD_NAMESPACE", &run.namespace)],
    );
    rec.wait_ready(START).await;
    let expected = vec![json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "warmpool", "uid": owner.uid().expect("uid"),
    })];
    let d = prewarmers(&run).get(PREWARMER).await.expect("prewarmer");
    assert_eq!(owner_refs(&d.metadata.owner_references), expected);
    let ds = caches(&run).get(IMAGE_CACHE).await.expect("cache");
    assert_eq!(owner_refs(&ds.metadata.owner_references), expected);
    let pc = Api::<PriorityClass>::all(client.clone())
        .get(PRIORITY_CLASS)
        .await
        .expect("pc");
    assert!(
        pc.metadata.owner_references.is_none(),
        "cluster-scoped: no namespaced owner"
    );

    // `helm uninstall`: the reconciler goes, its Deployment goes, and the garbage collector
    // removes what it created.
    rec.terminate();
    own.delete("warmpool", &DeleteParams::background())
        .await
        .expect("delete own Deployment");
    eventually(
        "prewarmer and image cache garbage-collected",
        START,
        || async {
            let d = prewarmers(&run).get_opt(PREWARMER).await.ok()?;
            let ds = caches(&run).get_opt(IMAGE_CACHE).await.ok()?;
            (d.is_none() && ds.is_none()).then_some(())
        },
    )
    .await;
    run.cleanup().await;
}
