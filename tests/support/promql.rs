//! Metric names on both sides of the observability kit: the ones a PromQL expression (an alert
//! of the chart's PrometheusRule, a panel of its Grafana dashboard) reads, and the ones a
//! `/metrics` scrape offers. The chart tests and tests/e2e/observability.rs include this file.
use std::collections::BTreeSet;

/// PromQL words that are never metric names, besides the `LABEL_LISTS` ones (operators,
/// modifiers, aggregations: an aggregation may be followed by `by (…)` rather than its
/// parenthesis).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
];

/// Words followed by a parenthesised list of label names, not of expressions.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` selects: every bare identifier that is not a keyword, a function (an
/// identifier before `(`) or a label name (inside `{…}` or a `by (…)`-like list). Strings,
/// ranges (`[5m]`), numbers, comments and Grafana variables (`$namespace`) are skipped.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            '{' => i = skip_until(&chars, i, '}'),
            '[' => i = skip_until(&chars, i, ']'),
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '$' => {
                i += 1;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // 86400, 0.05, 1e3, 5m: a digit starts no name.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if call && LABEL_LISTS.contains(&word.as_str()) {
                    i = skip_until(&chars, next, ')');
                } else if !call && !is_keyword(&word) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Whether `word` is a PromQL keyword (they are case-insensitive), never a metric name.
fn is_keyword(word: &str) -> bool {
    let word = word.to_ascii_lowercase();
    KEYWORDS.contains(&word.as_str()) || LABEL_LISTS.contains(&word.as_str())
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the string literal that opens at `open` (backslash escapes, except in raw
/// backtick strings).
fn skip_string(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The index after the `close` that ends the group opened at `open`, strings inside skipped.
fn skip_until(chars: &[char], open: usize, close: char) -> usize {
    let mut i = open + 1;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            c if c == close => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The series names a Prometheus server stores from this exposition (Prometheus text or
/// OpenMetrics, as warmpool serves it). A labelled family is listed by its `# TYPE` line before
/// any of its series exists, so the names come from those lines too: a counter `x` is stored as
/// `x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`, a summary as `x`, `x_sum` and
/// `x_count`; and from every sample line.
pub fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" if name.ends_with("_total") => &[""],
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
                "summary" => &["", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') {
            let name: String = line.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// The metrics the observability kit reads that warmpool does not export, and who does.
pub const EXTERNAL_METRICS: &[(&str, &str)] = &[
    ("up", "Prometheus itself: one series per scraped target"),
    (
        "kube_deployment_status_replicas_available",
        "kube-state-metrics (observability.prometheusRule.kubeStateMetrics)",
    ),
];

/// The PromQL the chart's observability kit runs, from the rendered documents, each with where
/// it comes from: every alert of the PrometheusRule, every target of the Grafana dashboard (the
/// JSON in the ConfigMap labelled for the sidecar) and the selector of each of its
/// `label_values(selector, label)` variables.
pub fn kit_queries(docs: &[serde_json::Value]) -> Vec<(String, String)> {
    use serde_json::Value;
    let mut out = Vec::new();
    let str_of = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    for rule in docs.iter().filter(|d| d["kind"] == "PrometheusRule") {
        for group in rule["spec"]["groups"].as_array().into_iter().flatten() {
            for r in group["rules"].as_array().into_iter().flatten() {
                out.push((format!("alert {}", str_of(&r["alert"])), str_of(&r["expr"])));
            }
        }
    }
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    for cm in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
        let Some(json) = cm["data"]["warmpool.json"].as_str() else {
            continue;
        };
        let dashboard: Value = serde_json::from_str(json).expect("the dashboard is JSON");
        let mut panels = Vec::new();
        walk(&dashboard["panels"], &mut panels);
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((format!("panel {}", str_of(&p["title"])), str_of(&t["expr"])));
            }
        }
        for var in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if var["type"] != "query" {
                continue;
            }
            let q = str_of(&var["query"]["query"]);
            let selector = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _label)| selector.to_owned())
                .unwrap_or_else(|| {
                    panic!("variable {}: not label_values(…, label): {q}", var["name"])
                });
            out.push((format!("variable {}", str_of(&var["name"])), selector));
        }
    }
    out
}
