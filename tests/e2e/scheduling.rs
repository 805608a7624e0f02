//! Scheduling for real: the real scheduler places warmpool's placeholders on warm fake nodes,
//! and a new tenant's CargoCATs pods land on warm nodes by preempting them — never on general
//! nodes, and nothing of the tenant stays Pending.

use std::time::Duration;

use support::cluster::{client, unique};
use support::fakelet::spawn_fakelet;
use support::scenario::{Setup, Warmpool, create_tenant, wait_tenant_scheduled};

use super::BIN;

#[tokio::test]
async fn tenants_preempt_placeholders_on_warm_nodes() {
    let _subject = support::subject::enter(module_path!());
    let Some(client) = client().await else { return };
    let fakelet = spawn_fakelet(client.clone());
    let run = unique("sched");
    let warmpool = Warmpool::start(&client, BIN.as_ref(), Setup::isolated(&run, 1)).await;

    // One slot of room per warm node; the general node could take everything, were it allowed.
    let warm = format!("{run}-warm-1");
    let general = format!("{run}-general-1");
    warmpool.add_warm_node(&warm, "1", "2560Mi").await;
    warmpool.add_general_node(&general, "16", "64Gi").await;

    let placed = warmpool
        .wait_placeholders_bound(1, Duration::from_secs(60))
        .await;
    assert_eq!(placed.len(), 1, "{placed:?}");
    assert_eq!(placed[0].1, warm, "placeholder must be on the warm node");
    let placeholder = placed[0].0.clone();

    let tenant = format!("{}1", warmpool.tenant_prefix);
    let started = create_tenant(&client, &run, &tenant).await;
    let pods = wait_tenant_scheduled(&client, &tenant, Duration::from_secs(90)).await;
    let took = started.elapsed();
    for p in &pods {
        assert_eq!(
            p.node, warm,
            "tenant pod {} landed on {} instead of the warm node",
            p.name, p.node
        );
        assert_eq!(p.injected, "node-affinity,tolerations", "{}", p.name);
    }
    // The placeholder made room: it is gone from the warm node, and its replacement waits for
    // a new warm node (Karpenter's job in a real cluster).
    let now = warmpool.placeholders().await;
    assert!(
        !now.iter().any(|(name, _)| name == &placeholder),
        "placeholder {placeholder} was not preempted: {now:?}"
    );
    assert!(
        now.iter()
            .all(|(_, node)| node.as_deref() != Some(general.as_str())),
        "a placeholder landed on the general node: {now:?}"
    );
    eprintln!("tenant {tenant} scheduled in {took:?} by preempting {placeholder}");

    warmpool.cleanup(&[tenant]).await;
    fakelet.abort();
}
