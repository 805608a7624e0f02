//! The values schema rejects bad values with a clear message.

use support::chart::{helm, try_render};

#[test]
fn schema_rejects_bad_values_with_a_clear_message() {
    let Some(helm) = helm() else { return };
    for (set, path, says) in [
        (
            "nodePool.flavor=foo",
            "/nodePool/flavor",
            "'autoMode', 'karpenter'",
        ),
        (
            "certs.mode=bar",
            "/certs/mode",
            "'helm', 'cert-manager', 'provided'",
        ),
        (
            "webhook.failurePolicy=Sometimes",
            "/webhook/failurePolicy",
            "'Ignore', 'Fail'",
        ),
        (
            "webhook.timeoutSeconds=60",
            "/webhook/timeoutSeconds",
            "maximum",
        ),
        (
            "pool.affinity=always",
            "/pool/affinity",
            "'required', 'preferred'",
        ),
        (
            "pool.taint.effect=NoWay",
            "/pool/taint/effect",
            "NoSchedule",
        ),
        (
            "nodePool.expireAfter=3d",
            "/nodePool/expireAfter",
            "does not match pattern",
        ),
        (
            "tenants.namespacePatterns={Demo_1}",
            "/tenants/namespacePatterns/0",
            "pattern",
        ),
        (
            "prewarmer.spareSlots=-1",
            "/prewarmer/spareSlots",
            "minimum",
        ),
        (
            "certs.mode=provided",
            "/certs/provided/secretName",
            "minLength",
        ),
        (
            "nodePool.ec2NodeClass.create=true",
            "/nodePool/ec2NodeClass/role",
            "minLength",
        ),
        (
            "webhook.failurepolicy=Fail",
            "/webhook",
            "'failurepolicy' not allowed",
        ),
        (
            "prewarmer.schedule[0].name=workshop",
            "/prewarmer/schedule/0",
            "cron",
        ),
        (
            "prewarmer.schedule[0].name=two words",
            "/prewarmer/schedule/0/name",
            "pattern",
        ),
        (
            "prewarmer.spareSlots.auto.max=-3",
            "/prewarmer/spareSlots/auto/max",
            "minimum",
        ),
        (
            "prewarmer.spareSlots.auto.maximum=3",
            "/prewarmer/spareSlots/auto",
            "'maximum' not allowed",
        ),
        (
            "prewarmer.scaleDown.step=0",
            "/prewarmer/scaleDown/step",
            "minimum",
        ),
        (
            "prewarmer.scaleDown.rate=1",
            "/prewarmer/scaleDown",
            "'rate' not allowed",
        ),
        (
            "imageCache.architectures={x86_64}",
            "/imageCache/architectures/0",
            "'amd64', 'arm64'",
        ),
    ] {
        let err = try_render(&helm, "wp", "ns", &["--set", set])
            .err()
            .unwrap_or_else(|| panic!("{set} was accepted"));
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{set}: {err}"
        );
        assert!(
            err.contains(&format!("at '{path}'")),
            "{set}: the path is named: {err}"
        );
        assert!(err.contains(says), "{set}: says {says:?}: {err}");
    }
}
