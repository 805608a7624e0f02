//! The observability kit (values `observability.*`): the ServiceMonitor, the PrometheusRule and
//! the Grafana dashboard's ConfigMap, each rendered only when switched on; every alert passes
//! `promtool check rules` and fires as tests/chart/alerts_test.yaml says (`promtool test
//! rules`); every metric the kit reads is warmpool's (tests/e2e/observability.rs checks them
//! against real scrapes) or one of the few external ones it names.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::{container, s, strings};
use support::chart::{
    self as harness, all_of, find, helm, kinds, promtool, render, run, text, try_render,
};

use support::promql;

use promql::{EXTERNAL_METRICS, exposed_names, kit_queries, metric_names};

const RELEASE: &str = "wp";
const NS: &str = "wp-system";
const DASHBOARD_CM: &str = "wp-warmpool-dashboard";

const SERVICE_MONITOR: &str = "observability.serviceMonitor.enabled=true";
const PROMETHEUS_RULE: &str = "observability.prometheusRule.enabled=true";
const GRAFANA_DASHBOARD: &str = "observability.grafanaDashboard.enabled=true";

fn with(sets: &[&str]) -> Vec<String> {
    sets.iter()
        .flat_map(|s| ["--set".to_owned(), (*s).to_owned()])
        .collect()
}

fn render_with(helm: &Path, sets: &[&str]) -> Vec<Value> {
    let args = with(sets);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    render(helm, RELEASE, NS, &args)
}

/// The kit's objects among `docs`: (ServiceMonitors, PrometheusRules, dashboard ConfigMaps).
fn kit(docs: &[Value]) -> (usize, usize, usize) {
    let dashboards = all_of(docs, "ConfigMap")
        .into_iter()
        .filter(|c| c["metadata"]["name"] == DASHBOARD_CM)
        .count();
    (
        all_of(docs, "ServiceMonitor").len(),
        all_of(docs, "PrometheusRule").len(),
        dashboards,
    )
}

/// Every alert of the PrometheusRule, with the name of its group.
fn alerts(docs: &[Value]) -> Vec<(String, Value)> {
    let rule = find(docs, "PrometheusRule", None);
    rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| {
            let group = s(&g["name"]).to_owned();
            g["rules"]
                .as_array()
                .expect("rules")
                .iter()
                .map(move |r| (group.clone(), r.clone()))
        })
        .collect()
}

fn alert<'a>(alerts: &'a [(String, Value)], name: &str) -> &'a Value {
    alerts
        .iter()
        .map(|(_, a)| a)
        .find(|a| a["alert"] == name)
        .unwrap_or_else(|| panic!("no alert {name}"))
}

fn alert_names(alerts: &[(String, Value)]) -> BTreeSet<String> {
    alerts
        .iter()
        .map(|(_, a)| s(&a["alert"]).to_owned())
        .collect()
}

fn dashboard(docs: &[Value]) -> Value {
    let cm = find(docs, "ConfigMap", Some(DASHBOARD_CM));
    serde_json::from_str(s(&cm["data"]["warmpool.json"])).expect("the dashboard is JSON")
}

/// Every panel, those inside collapsed rows too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn schema_alert_names() -> BTreeSet<String> {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(harness::chart_dir().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    strings(
        &schema["properties"]["observability"]["properties"]["prometheusRule"]["properties"]
            ["disabled"]["items"]["enum"],
    )
    .into_iter()
    .collect()
}

#[test]
fn the_kit_is_off_by_default_and_each_switch_renders_its_object_alone() {
    let Some(helm) = helm() else { return };
    assert_eq!(kit(&render_with(&helm, &[])), (0, 0, 0), "defaults");
    assert_eq!(kit(&render_with(&helm, &[SERVICE_MONITOR])), (1, 0, 0));
    assert_eq!(kit(&render_with(&helm, &[PROMETHEUS_RULE])), (0, 1, 0));
    assert_eq!(kit(&render_with(&helm, &[GRAFANA_DASHBOARD])), (0, 0, 1));
    let all = render_with(
        &helm,
        &[SERVICE_MONITOR, PROMETHEUS_RULE, GRAFANA_DASHBOARD],
    );
    assert_eq!(kit(&all), (1, 1, 1));
    // The rest of the chart is the same with the kit as without it (the generated certificates
    // aside: each render makes new ones).
    let defaults = render_with(&helm, &[]);
    let rest = |docs: &[Value]| -> Vec<String> {
        kinds(docs)
            .into_iter()
            .filter(|k| {
                !k.starts_with("ServiceMonitor/")
                    && !k.starts_with("PrometheusRule/")
                    && *k != format!("ConfigMap/{DASHBOARD_CM}")
            })
            .collect()
    };
    assert_eq!(rest(&all), rest(&defaults));
    for kind in ["Deployment", "Service", "ConfigMap"] {
        let name = (kind == "ConfigMap").then_some("wp-warmpool");
        assert_eq!(
            find(&all, kind, name),
            find(&defaults, kind, name),
            "{kind}"
        );
    }
}

#[test]
fn the_service_monitor_scrapes_both_metrics_ports_of_every_replica() {
    let Some(helm) = helm() else { return };
    let docs = render_with(&helm, &[SERVICE_MONITOR]);
    let sm = find(&docs, "ServiceMonitor", None);
    let service = find(&docs, "Service", None);
    let deployment = find(&docs, "Deployment", None);
    assert_eq!(sm["metadata"]["namespace"], NS);
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"], json!([NS]));
    // The selector picks the chart's Service.
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "Service label {k}");
    }
    let endpoints = sm["spec"]["endpoints"].as_array().unwrap();
    let ports: Vec<&str> = endpoints.iter().map(|e| s(&e["port"])).collect();
    assert_eq!(ports, ["metrics", "reconciler-metrics"]);
    // Each endpoint is a Service port that leads to the --metrics-listen port of its container,
    // over plain HTTP.
    for (endpoint, container_name) in endpoints.iter().zip(["webhook", "reconciler"]) {
        assert_eq!(endpoint["path"], "/metrics");
        assert_eq!(endpoint["scheme"], "http");
        assert_eq!(endpoint["interval"], "30s");
        assert_eq!(endpoint["scrapeTimeout"], "10s");
        let port = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == endpoint["port"])
            .unwrap_or_else(|| panic!("no Service port {}", endpoint["port"]));
        let c = container(deployment, container_name);
        let container_port = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port["targetPort"])
            .unwrap_or_else(|| panic!("{container_name} has no port {}", port["targetPort"]));
        let listen = format!(
            "--metrics-listen=0.0.0.0:{}",
            container_port["containerPort"]
        );
        assert!(
            strings(&c["args"]).contains(&listen),
            "{container_name}: {listen} in {}",
            c["args"]
        );
        assert_eq!(port["port"], container_port["containerPort"]);
    }

    let docs = render_with(
        &helm,
        &[
            SERVICE_MONITOR,
            "observability.serviceMonitor.labels.release=kps",
            "observability.serviceMonitor.namespace=monitoring",
            "observability.serviceMonitor.interval=",
            "observability.serviceMonitor.scrapeTimeout=",
        ],
    );
    let sm = find(&docs, "ServiceMonitor", None);
    assert_eq!(sm["metadata"]["labels"]["release"], "kps");
    assert_eq!(sm["metadata"]["namespace"], "monitoring");
    // Still the release namespace's Service.
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"], json!([NS]));
    for e in sm["spec"]["endpoints"].as_array().unwrap() {
        assert!(
            e.get("interval").is_none() && e.get("scrapeTimeout").is_none(),
            "{e}"
        );
    }
}

#[test]
fn every_alert_says_what_to_do_and_the_values_shape_the_rule() {
    let Some(helm) = helm() else { return };
    let docs = render_with(&helm, &[PROMETHEUS_RULE]);
    let rule = find(&docs, "PrometheusRule", None);
    assert_eq!(rule["metadata"]["namespace"], NS);
    let all = alerts(&docs);
    // values.schema.json lists exactly the alerts there are (observability.prometheusRule.disabled).
    assert_eq!(alert_names(&all), schema_alert_names());
    let groups: BTreeSet<&str> = all.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(
        groups,
        BTreeSet::from([
            "warmpool-webhook",
            "warmpool-reconciler",
            "warmpool-warm-capacity",
            "warmpool-image-cache",
            "warmpool-tenants"
        ])
    );
    for (_, a) in &all {
        let name = s(&a["alert"]);
        assert!(
            s(&a["for"]).ends_with('m') || s(&a["for"]).ends_with('h'),
            "{name}: for"
        );
        assert!(
            ["warning", "critical"].contains(&s(&a["labels"]["severity"])),
            "{name}: severity"
        );
        assert!(
            !s(&a["annotations"]["summary"]).is_empty(),
            "{name}: summary"
        );
        // What to do next: a command or a value to look at.
        let description = s(&a["annotations"]["description"]);
        assert!(
            description.contains("kubectl") || description.contains("logs"),
            "{name}: {description}"
        );
        // Every selector of warmpool's own series names this release.
        let expr = s(&a["expr"]);
        for m in metric_names(expr) {
            if m.starts_with("warmpool_") {
                assert!(
                    expr.contains(&format!(r#"{m}{{namespace="{NS}", service="wp-warmpool""#)),
                    "{name}: {m} not scoped to the release in {expr}"
                );
            }
        }
    }
    // With failurePolicy Ignore an unavailable webhook blocks nothing: warning.
    let webhook_down = [
        "WarmpoolWebhookUnavailable",
        "WarmpoolWebhookErrors",
        "WarmpoolWebhookCertificateExpired",
    ];
    for name in webhook_down {
        assert_eq!(alert(&all, name)["labels"]["severity"], "warning", "{name}");
        assert!(s(&alert(&all, name)["annotations"]["description"]).contains("unmutated"));
    }

    // With Fail it blocks every tenant pod: critical, and the description says so.
    let fail = alerts(&render_with(
        &helm,
        &[PROMETHEUS_RULE, "webhook.failurePolicy=Fail"],
    ));
    for name in webhook_down {
        assert_eq!(
            alert(&fail, name)["labels"]["severity"],
            "critical",
            "{name}"
        );
        assert!(s(&alert(&fail, name)["annotations"]["description"]).contains("refused"));
    }

    // Without kube-state-metrics: no alert or expression that needs it.
    let no_ksm = alerts(&render_with(
        &helm,
        &[
            PROMETHEUS_RULE,
            "observability.prometheusRule.kubeStateMetrics=false",
        ],
    ));
    let mut expected = schema_alert_names();
    expected.remove("WarmpoolNoSpareSlotReady");
    assert_eq!(alert_names(&no_ksm), expected);
    for (_, a) in &no_ksm {
        for m in metric_names(s(&a["expr"])) {
            assert!(
                m.starts_with("warmpool_") || m == "up",
                "{}: {m}",
                a["alert"]
            );
        }
    }

    // Disabled alerts go, and a group left empty goes with them; alertLabels join every alert,
    // whose own severity stays.
    let docs = render_with(
        &helm,
        &[
            PROMETHEUS_RULE,
            "observability.prometheusRule.disabled={WarmpoolImageNotCached,WarmpoolImagesPendingLong,WarmpoolReconcileFailing}",
            "observability.prometheusRule.alertLabels.team=platform",
            "observability.prometheusRule.alertLabels.severity=info",
            "observability.prometheusRule.labels.release=kps",
            "observability.prometheusRule.namespace=monitoring",
            "observability.prometheusRule.certificateExpiryDays=30",
            "observability.prometheusRule.noSpareSlotFor=5m",
        ],
    );
    let rule = find(&docs, "PrometheusRule", None);
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    assert_eq!(rule["metadata"]["namespace"], "monitoring");
    let some = alerts(&docs);
    let mut expected = schema_alert_names();
    for gone in [
        "WarmpoolImageNotCached",
        "WarmpoolImagesPendingLong",
        "WarmpoolReconcileFailing",
    ] {
        expected.remove(gone);
    }
    assert_eq!(alert_names(&some), expected);
    assert!(some.iter().all(|(g, _)| g != "warmpool-image-cache"));
    for (_, a) in &some {
        assert_eq!(a["labels"]["team"], "platform", "{}", a["alert"]);
        assert_ne!(a["labels"]["severity"], "info", "{}", a["alert"]);
    }
    assert!(
        s(&alert(&some, "WarmpoolWebhookCertificateExpiringSoon")["expr"]).contains("< 30 * 86400")
    );
    assert_eq!(alert(&some, "WarmpoolNoSpareSlotReady")["for"], "5m");
    assert_eq!(alert(&some, "WarmpoolPlaceholdersPending")["for"], "5m");

    // The certificate alerts say how to renew in each certificate mode.
    for (mode, extra, says) in [
        ("helm", &[][..], "delete secret wp-warmpool-tls"),
        ("cert-manager", &[][..], "describe certificate"),
        (
            "provided",
            &[
                "certs.provided.secretName=mine",
                "certs.provided.caBundle=LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
            ][..],
            "Renew the Secret mine",
        ),
    ] {
        let mode_set = format!("certs.mode={mode}");
        let mut sets = vec![PROMETHEUS_RULE, mode_set.as_str()];
        sets.extend_from_slice(extra);
        let a = alerts(&render_with(&helm, &sets));
        let d =
            s(&alert(&a, "WarmpoolWebhookCertificateExpiringSoon")["annotations"]["description"])
                .replace('\n', " ");
        assert!(d.contains(says), "{mode}: {d}");
    }
}

/// The PrometheusRule's spec (a Prometheus rule file) rendered with `sets`, as YAML.
fn rule_file(helm: &Path, sets: &[&str], annotations: bool) -> String {
    let mut all = vec![PROMETHEUS_RULE];
    all.extend_from_slice(sets);
    let docs = render_with(helm, &all);
    let mut spec = find(&docs, "PrometheusRule", None)["spec"].clone();
    if !annotations {
        for group in spec["groups"].as_array_mut().unwrap() {
            for rule in group["rules"].as_array_mut().unwrap() {
                rule.as_object_mut().unwrap().remove("annotations");
            }
        }
    }
    serde_saphyr::to_string(&spec).unwrap()
}

/// `promtool test rules` of tests/chart/alerts_test.yaml against `rules` (a rule file).
fn unit_test(promtool: &Path, rules: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();
    let tests = dir.path().join("alerts_test.yaml");
    std::fs::copy(
        support::repo_root().join("tests/chart/alerts_test.yaml"),
        &tests,
    )
    .unwrap();
    run(
        promtool,
        &["test", "rules", tests.to_str().unwrap()],
        &[],
        None,
    )
}

#[test]
fn every_alert_passes_promtool_check_rules_and_fires_as_its_unit_tests_say() {
    let Some(helm) = helm() else { return };
    let Some(promtool) = promtool() else { return };
    let provided = [
        "certs.mode=provided",
        "certs.provided.secretName=mine",
        "certs.provided.caBundle=LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
    ];
    for (name, sets) in [
        ("defaults", &[][..]),
        (
            "without kube-state-metrics",
            &["observability.prometheusRule.kubeStateMetrics=false"][..],
        ),
        ("failurePolicy Fail", &["webhook.failurePolicy=Fail"][..]),
        ("cert-manager", &["certs.mode=cert-manager"][..]),
        ("provided", &provided[..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.yaml");
        std::fs::write(&file, rule_file(&helm, sets, true)).unwrap();
        // Every linter, fatal: duplicate rules and all.
        let out = run(
            &promtool,
            &[
                "check",
                "rules",
                "--lint=all",
                "--lint-fatal",
                file.to_str().unwrap(),
            ],
            &[],
            None,
        );
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "{name}: promtool check rules:\n{said}"
        );
        assert!(said.contains("SUCCESS"), "{name}: {said}");
    }

    // Every alert has a case in which it fires.
    let cases: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(support::repo_root().join("tests/chart/alerts_test.yaml"))
            .unwrap(),
    )
    .unwrap();
    let firing: BTreeSet<String> = cases["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|c| !c["exp_alerts"].as_array().unwrap().is_empty())
        .map(|c| s(&c["alertname"]).to_owned())
        .collect();
    assert_eq!(firing, schema_alert_names(), "alerts without a firing case");

    let out = unit_test(&promtool, &rule_file(&helm, &[], false));
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The cases can fail: a longer noSpareSlotFor leaves the alert pending at 22m.
    let out = unit_test(
        &promtool,
        &rule_file(
            &helm,
            &["observability.prometheusRule.noSpareSlotFor=30m"],
            false,
        ),
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("WarmpoolNoSpareSlotReady"), "{said}");
}

#[test]
fn the_dashboard_is_the_chart_file_labelled_for_the_sidecar() {
    let Some(helm) = helm() else { return };
    let docs = render_with(&helm, &[GRAFANA_DASHBOARD]);
    let cm = find(&docs, "ConfigMap", Some(DASHBOARD_CM));
    assert_eq!(cm["metadata"]["namespace"], NS);
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let file =
        std::fs::read_to_string(harness::chart_dir().join("dashboards/warmpool.json")).unwrap();
    assert_eq!(s(&cm["data"]["warmpool.json"]), file.trim_end());
    let d = dashboard(&docs);
    assert_eq!(d["uid"], "warmpool");

    // The data source is a variable, and every panel and query uses it.
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    let uses = json!({"type": "prometheus", "uid": format!("${{{}}}", s(&ds["name"]))});
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"], uses, "variable {}", v["name"]);
    }
    let mut titles = BTreeSet::new();
    for p in panels(&d).into_iter().filter(|p| p["type"] != "row") {
        let title = s(&p["title"]);
        assert!(titles.insert(title), "two panels titled {title}");
        assert_eq!(p["datasource"], uses, "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert_eq!(t["datasource"], uses, "{title}");
            let expr = s(&t["expr"]);
            // Scoped to the release the variables pick.
            assert!(
                expr.contains(r#"namespace="$namespace""#),
                "{title}: {expr}"
            );
        }
    }
    // The panels the kit promises.
    for wanted in [
        "Spare slots: wanted and ready",
        "Schedule window in force",
        "Cached images on warm nodes, by state",
        "Reviews per second, by outcome",
        "Review latency",
        "Writes per second, by target",
        "Leader",
    ] {
        assert!(titles.contains(wanted), "no panel {wanted}: {titles:?}");
    }
    let latency = panels(&d)
        .into_iter()
        .find(|p| p["title"] == "Review latency")
        .unwrap();
    let quantiles: Vec<&str> = latency["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| s(&t["expr"]))
        .collect();
    for q in ["0.5", "0.9", "0.99"] {
        assert!(
            quantiles
                .iter()
                .any(|e| e.starts_with(&format!("histogram_quantile({q}, "))
                    && e.contains("warmpool_webhook_review_duration_seconds_bucket")),
            "{quantiles:?}"
        );
    }

    // The sidecar's label, the ConfigMap's namespace and annotations are values.
    let docs = render_with(
        &helm,
        &[
            GRAFANA_DASHBOARD,
            "observability.grafanaDashboard.sidecarLabel=dashboards.example.com/grafana",
            "observability.grafanaDashboard.sidecarLabelValue=yes",
            "observability.grafanaDashboard.namespace=monitoring",
            "observability.grafanaDashboard.annotations.grafana_folder=warmpool",
            "observability.grafanaDashboard.labels.team=platform",
        ],
    );
    let cm = find(&docs, "ConfigMap", Some(DASHBOARD_CM));
    assert_eq!(cm["metadata"]["namespace"], "monitoring");
    assert_eq!(
        cm["metadata"]["labels"]["dashboards.example.com/grafana"],
        "yes"
    );
    assert!(cm["metadata"]["labels"].get("grafana_dashboard").is_none());
    assert_eq!(cm["metadata"]["labels"]["team"], "platform");
    assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "warmpool");
}

/// The metric names the kit reads (alerts and dashboard).
fn names_the_kit_reads(docs: &[Value]) -> BTreeSet<String> {
    kit_queries(docs)
        .iter()
        .flat_map(|(_, q)| metric_names(q))
        .collect()
}

#[test]
fn every_metric_the_kit_reads_is_warmpool_s_or_a_named_external_one() {
    let Some(helm) = helm() else { return };
    let docs = render_with(&helm, &[PROMETHEUS_RULE, GRAFANA_DASHBOARD]);
    let names = names_the_kit_reads(&docs);
    let external: BTreeSet<&str> = EXTERNAL_METRICS.iter().map(|(n, _)| *n).collect();
    for n in &names {
        assert!(
            n.starts_with("warmpool_") || external.contains(n.as_str()),
            "{n}"
        );
    }
    // Sanity: the parts the kit is about are all read.
    for n in [
        "warmpool_webhook_reviews_total",
        "warmpool_webhook_review_duration_seconds_bucket",
        "warmpool_webhook_certificate_expiry_timestamp_seconds",
        "warmpool_reconcile_leader",
        "warmpool_reconcile_spare_slots",
        "warmpool_reconcile_schedule_window_in_force",
        "warmpool_image_cache_failed_nodes",
        "warmpool_image_cache_images",
    ] {
        assert!(names.contains(n), "{n} not read: {names:?}");
    }
}

#[test]
fn the_schema_rejects_bad_observability_values() {
    let Some(helm) = helm() else { return };
    for (set, says) in [
        (
            "observability.serviceMonitor.enabled=yes",
            "/observability/serviceMonitor/enabled",
        ),
        (
            "observability.serviceMonitor.interval=30",
            "/observability/serviceMonitor/interval",
        ),
        (
            "observability.prometheusRule.disabled={WarmpoolWebhookDown}",
            "/observability/prometheusRule/disabled/0",
        ),
        (
            "observability.prometheusRule.certificateExpiryDays=0",
            "/observability/prometheusRule/certificateExpiryDays",
        ),
        (
            "observability.prometheusRule.noSpareSlotFor=soon",
            "/observability/prometheusRule/noSpareSlotFor",
        ),
        (
            "observability.grafanaDashboard.sidecarLabel=two words",
            "/observability/grafanaDashboard/sidecarLabel",
        ),
        (
            "observability.grafanaDashboard.namespace=Monitoring",
            "/observability/grafanaDashboard/namespace",
        ),
        (
            "observability.grafanaDashboard.enable=true",
            "'enable' not allowed",
        ),
    ] {
        let args = with(&[set]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = try_render(&helm, RELEASE, NS, &args)
            .err()
            .unwrap_or_else(|| panic!("{set} was accepted"));
        assert!(err.contains(says), "{set}: {err}");
    }
}

#[test]
fn names_of_an_expression_leave_out_functions_labels_and_keywords() {
    let expr = r#"sum by (outcome) (rate(a_total{namespace="x", outcome!~"p|q"}[5m]))
        / on (namespace) group_left (pod) max without (le) (b_bucket offset 1h)
        and on () histogram_quantile(0.9, c_bucket{le="+Inf"}[$__rate_interval:1m]) > 14 * 86400
        unless absent(up{service="$service"} == 1) or vector(0) # d_not_a_metric
        or count(e:recorded) AND BY"#;
    let want: BTreeSet<String> = ["a_total", "b_bucket", "c_bucket", "up", "e:recorded"]
        .map(String::from)
        .into();
    assert_eq!(metric_names(expr), want);
}

#[test]
fn exposed_names_come_from_samples_and_from_type_lines_of_empty_families() {
    let exposition = "# HELP w_reviews Reviews.\n# TYPE w_reviews counter\n\
                      # TYPE w_duration_seconds histogram\n\
                      w_duration_seconds_bucket{le=\"0.1\"} 1\n\
                      # TYPE w_expiry_timestamp_seconds gauge\n\
                      # UNIT w_expiry_timestamp_seconds seconds\n\
                      w_expiry_timestamp_seconds 5\n# EOF\n";
    let want: BTreeSet<String> = [
        "w_reviews_total",
        "w_duration_seconds_bucket",
        "w_duration_seconds_sum",
        "w_duration_seconds_count",
        "w_expiry_timestamp_seconds",
    ]
    .map(String::from)
    .into();
    assert_eq!(exposed_names(exposition), want);
}
