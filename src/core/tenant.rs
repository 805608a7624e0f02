//! Who is a tenant. One pure rule, shared by the reconciler (which enrols namespaces), the
//! webhook server (which refuses to touch system namespaces) and `warmpool mutate`.

use std::collections::BTreeMap;
use std::fmt;

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use kube::core::{Expression, Selector, SelectorExt};

/// The namespace label that opts a namespace in (`enabled`) or out (`disabled`).
pub const TENANT_LABEL: &str = "warmpool.io/tenant";
pub const ENABLED: &str = "enabled";
pub const DISABLED: &str = "disabled";

/// Namespaces that are never tenants, whatever their name or labels say.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// Why a namespace is, or is not, a tenant; the `Display` form is what users read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    MatchesPattern(String),
    OptedIn,
    System,
    OwnNamespace,
    /// Listed in `tenants.excludeNamespaces`.
    Excluded,
    OptedOut,
    /// Its labels fail `tenants.namespaceMatchExpressions`.
    Unmatched,
    NoMatch,
}

impl Membership {
    pub fn is_tenant(&self) -> bool {
        matches!(self, Membership::MatchesPattern(_) | Membership::OptedIn)
    }
}

impl fmt::Display for Membership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Membership::MatchesPattern(p) => write!(f, "name matches tenant pattern `{p}`"),
            Membership::OptedIn => write!(f, "namespace is labelled {TENANT_LABEL}={ENABLED}"),
            Membership::System => write!(f, "system namespaces are never tenants"),
            Membership::OwnNamespace => write!(f, "warmpool's own namespace is never a tenant"),
            Membership::Excluded => write!(f, "listed in tenants.excludeNamespaces"),
            Membership::OptedOut => write!(f, "namespace is labelled {TENANT_LABEL}={DISABLED}"),
            Membership::Unmatched => write!(
                f,
                "namespace labels do not match tenants.namespaceMatchExpressions"
            ),
            Membership::NoMatch => write!(
                f,
                "name matches no tenant pattern and the namespace is not labelled {TENANT_LABEL}={ENABLED}"
            ),
        }
    }
}

/// A tenant pattern that is not a glob we accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error(transparent)]
    Syntax(#[from] globset::Error),
    /// globset drops an empty alternative (`{a,}` is `{a}`) where a shell would match the empty
    /// string; rather than pick one of the two meanings, such a pattern is refused.
    #[error(
        "`{0}` has an empty alternative in `{{…}}`; write it out, e.g. `demo-{{a,b}}*` and `demo-*`"
    )]
    EmptyAlternative(String),
}

/// A tenant rule that cannot be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error(transparent)]
    Glob(#[from] GlobError),
    #[error("tenants.namespaceMatchExpressions[{index}]: {message}")]
    Expression { index: usize, message: String },
}

/// What the tenant rule reads of a namespace's labels; a cache keeps this instead of the labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LabelFacts<'a> {
    /// The value of `warmpool.io/tenant`.
    pub tenant_label: Option<&'a str>,
    /// The labels fail `tenants.namespaceMatchExpressions`.
    pub unmatched: bool,
}

/// Compiles one label-selector requirement of `tenants.namespaceMatchExpressions` the way the
/// API server reads a webhook's `namespaceSelector`: `In`/`NotIn` with values, `Exists`/
/// `DoesNotExist` without.
pub fn compile_requirement(requirement: &LabelSelectorRequirement) -> Result<Expression, String> {
    let values = requirement.values.as_deref().unwrap_or_default();
    match (requirement.operator.as_str(), values.is_empty()) {
        ("In" | "NotIn", true) => Err(format!(
            "operator `{}` needs at least one value",
            requirement.operator
        )),
        ("Exists" | "DoesNotExist", false) => Err(format!(
            "operator `{}` takes no values",
            requirement.operator
        )),
        _ => Expression::try_from(requirement.clone()).map_err(|_| {
            format!(
                "`{}` is not an operator (In, NotIn, Exists, DoesNotExist)",
                requirement.operator
            )
        }),
    }
}

/// Compiles one shell-style glob the way the selector does (so config validation agrees).
pub fn compile_glob(pattern: &str) -> Result<Glob, GlobError> {
    if has_empty_alternative(pattern) {
        return Err(GlobError::EmptyAlternative(pattern.to_owned()));
    }
    Ok(GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()?)
}

/// Whether a `{…}` outside a character class has an empty alternative (`{,a}`, `{a,}`,
/// `{a,,b}`, `{}`).
fn has_empty_alternative(pattern: &str) -> bool {
    let (mut escaped, mut class, mut class_start) = (false, false, false);
    // One entry per open brace: whether its current alternative is still empty.
    let mut open: Vec<bool> = Vec::new();
    for c in pattern.chars() {
        if escaped {
            escaped = false;
            if let Some(empty) = open.last_mut() {
                *empty = false;
            }
            continue;
        }
        if class {
            // `]` first in a class (or after `!`) is a literal.
            if c == ']' && !class_start {
                class = false;
            }
            class_start = class_start && (c == '!' || c == '^');
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' => {
                (class, class_start) = (true, true);
                if let Some(empty) = open.last_mut() {
                    *empty = false;
                }
            }
            '{' => open.push(true),
            ',' | '}' if open.last() == Some(&true) => return true,
            ',' => {
                if let Some(empty) = open.last_mut() {
                    *empty = true;
                }
            }
            '}' => {
                open.pop();
                if let Some(empty) = open.last_mut() {
                    *empty = false;
                }
            }
            _ => {
                if let Some(empty) = open.last_mut() {
                    *empty = false;
                }
            }
        }
    }
    false
}

/// The compiled tenant rule.
#[derive(Debug, Clone)]
pub struct TenantSelector {
    patterns: Vec<String>,
    globs: GlobSet,
    own_namespace: Option<String>,
    /// `tenants.excludeNamespaces`: never tenants, whatever their name or label.
    excluded: Vec<String>,
    /// `tenants.namespaceMatchExpressions`: what a tenant's labels must also satisfy (the same
    /// requirements narrow the webhook's `namespaceSelector`).
    match_expressions: Selector,
}

impl TenantSelector {
    /// `own_namespace` is warmpool's namespace when known (never a tenant).
    pub fn new(patterns: &[String], own_namespace: Option<&str>) -> Result<Self, GlobError> {
        let mut set = GlobSetBuilder::new();
        for p in patterns {
            set.add(compile_glob(p)?);
        }
        Ok(TenantSelector {
            patterns: patterns.to_vec(),
            globs: set.build()?,
            own_namespace: own_namespace.map(str::to_owned),
            excluded: Vec::new(),
            match_expressions: Selector::default(),
        })
    }

    /// The whole rule: name patterns, namespaces excluded by name, and label requirements (the
    /// configuration's `tenants`, read by `config::Tenants::selector`).
    pub fn with_exclusions(
        patterns: &[String],
        excluded: &[String],
        requirements: &[LabelSelectorRequirement],
        own_namespace: Option<&str>,
    ) -> Result<Self, RuleError> {
        let mut selector = TenantSelector::new(patterns, own_namespace)?;
        selector.excluded = excluded.to_vec();
        for (index, requirement) in requirements.iter().enumerate() {
            let expression = compile_requirement(requirement)
                .map_err(|message| RuleError::Expression { index, message })?;
            selector.match_expressions.extend(expression);
        }
        Ok(selector)
    }

    /// What the rule reads of `labels`.
    pub fn facts<'a>(&self, labels: &'a BTreeMap<String, String>) -> LabelFacts<'a> {
        LabelFacts {
            tenant_label: labels.get(TENANT_LABEL).map(String::as_str),
            unmatched: !self.match_expressions.matches(labels),
        }
    }

    /// True for the namespaces that are never tenants (system ones, warmpool's own).
    pub fn is_excluded(&self, namespace: &str) -> Option<Membership> {
        if SYSTEM_NAMESPACES.contains(&namespace) {
            Some(Membership::System)
        } else if self.own_namespace.as_deref() == Some(namespace) {
            Some(Membership::OwnNamespace)
        } else if self.excluded.iter().any(|e| e == namespace) {
            Some(Membership::Excluded)
        } else {
            None
        }
    }

    /// The full rule: exclusions first, then the opt-out label, the label requirements, the
    /// opt-in label, the patterns.
    pub fn decide(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Membership {
        self.decide_by_facts(namespace, self.facts(labels))
    }

    /// [`Self::decide`] from what it reads of the labels.
    pub fn decide_by_facts(&self, namespace: &str, facts: LabelFacts<'_>) -> Membership {
        if let Some(excluded) = self.is_excluded(namespace) {
            return excluded;
        }
        match facts.tenant_label {
            Some(DISABLED) => return Membership::OptedOut,
            _ if facts.unmatched => return Membership::Unmatched,
            Some(ENABLED) => return Membership::OptedIn,
            _ => {}
        }
        match self.matching_pattern(namespace) {
            Some(p) => Membership::MatchesPattern(p.to_owned()),
            None => Membership::NoMatch,
        }
    }

    /// Whether `namespace` is a tenant: [`Self::decide`]`.is_tenant()` without building the
    /// membership (the reconciler asks it of every namespace at each observation).
    pub fn is_tenant(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        self.is_tenant_by_facts(namespace, self.facts(labels))
    }

    /// [`Self::is_tenant`] from what it reads of the labels.
    pub fn is_tenant_by_facts(&self, namespace: &str, facts: LabelFacts<'_>) -> bool {
        if facts.unmatched || self.is_excluded(namespace).is_some() {
            return false;
        }
        match facts.tenant_label {
            Some(DISABLED) => false,
            Some(ENABLED) => true,
            _ => self.globs.is_match(namespace),
        }
    }

    /// The first pattern that matches the name, if any.
    pub fn matching_pattern(&self, namespace: &str) -> Option<&str> {
        self.globs
            .matches(namespace)
            .first()
            .map(|&i| self.patterns[i].as_str())
    }
}

/// Namespace labels from `(key, value)` pairs, for the unit tests here and in the reconciler.
#[cfg(test)]
pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector() -> TenantSelector {
        TenantSelector::new(&["demo-*".into(), "team-?".into()], Some("warmpool")).unwrap()
    }

    #[test]
    fn names_matching_a_pattern_are_tenants() {
        let s = selector();
        assert_eq!(
            s.decide("demo-1", &labels(&[])),
            Membership::MatchesPattern("demo-*".into())
        );
        assert_eq!(
            s.decide("team-a", &labels(&[])),
            Membership::MatchesPattern("team-?".into())
        );
        assert!(s.decide("demo-", &labels(&[])).is_tenant());
        assert_eq!(s.decide("team-ab", &labels(&[])), Membership::NoMatch);
        assert_eq!(s.decide("default", &labels(&[])), Membership::NoMatch);
        assert_eq!(s.decide("xdemo-1", &labels(&[])), Membership::NoMatch);
    }

    #[test]
    fn labels_opt_in_and_out() {
        let s = selector();
        assert_eq!(
            s.decide("payments", &labels(&[(TENANT_LABEL, ENABLED)])),
            Membership::OptedIn
        );
        assert_eq!(
            s.decide("demo-7", &labels(&[(TENANT_LABEL, DISABLED)])),
            Membership::OptedOut
        );
        // An unknown value neither opts in nor out: the name decides.
        assert_eq!(
            s.decide("payments", &labels(&[(TENANT_LABEL, "yes")])),
            Membership::NoMatch
        );
        assert!(
            s.decide("demo-7", &labels(&[(TENANT_LABEL, "yes")]))
                .is_tenant()
        );
    }

    #[test]
    fn system_and_own_namespaces_never_are() {
        let s = TenantSelector::new(&["*".into()], Some("warmpool")).unwrap();
        let on = labels(&[(TENANT_LABEL, ENABLED)]);
        for ns in SYSTEM_NAMESPACES {
            assert_eq!(s.decide(ns, &on), Membership::System);
        }
        assert_eq!(s.decide("warmpool", &on), Membership::OwnNamespace);
        assert!(s.decide("default", &labels(&[])).is_tenant());
    }

    #[test]
    fn is_tenant_agrees_with_the_full_rule() {
        let patterned = selector();
        let everything = TenantSelector::new(&["*".into()], Some("warmpool")).unwrap();
        let values = [None, Some(ENABLED), Some(DISABLED), Some("yes")];
        let names = [
            "demo-1", "demo-", "team-a", "team-ab", "payments", "warmpool",
        ];
        for s in [&patterned, &everything] {
            for ns in names.iter().chain(SYSTEM_NAMESPACES.iter()) {
                for value in values {
                    let l = labels(
                        &value
                            .map(|v| (TENANT_LABEL, v))
                            .into_iter()
                            .collect::<Vec<_>>(),
                    );
                    assert_eq!(
                        s.is_tenant(ns, &l),
                        s.decide(ns, &l).is_tenant(),
                        "{ns} labelled {value:?}"
                    );
                }
            }
        }
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn narrowed() -> TenantSelector {
        TenantSelector::with_exclusions(
            &["demo-*".into()],
            &[],
            &[
                requirement("team", "In", &["payments", "search"]),
                requirement("frozen", "DoesNotExist", &[]),
            ],
            Some("warmpool"),
        )
        .unwrap()
    }

    #[test]
    fn label_requirements_narrow_names_and_opt_ins_alike() {
        let s = narrowed();
        let team = labels(&[("team", "payments")]);
        assert!(s.decide("demo-1", &team).is_tenant());
        assert_eq!(s.decide("demo-1", &labels(&[])), Membership::Unmatched);
        assert_eq!(
            s.decide("demo-1", &labels(&[("team", "payments"), ("frozen", "")])),
            Membership::Unmatched
        );
        assert_eq!(
            s.decide(
                "payments",
                &labels(&[(TENANT_LABEL, ENABLED), ("team", "ads")])
            ),
            Membership::Unmatched
        );
        assert_eq!(
            s.decide(
                "payments",
                &labels(&[(TENANT_LABEL, ENABLED), ("team", "search")])
            ),
            Membership::OptedIn
        );
        // The opt-out and the exclusions still say why first.
        assert_eq!(
            s.decide("demo-1", &labels(&[(TENANT_LABEL, DISABLED)])),
            Membership::OptedOut
        );
        assert_eq!(s.decide("warmpool", &team), Membership::OwnNamespace);
        for l in [labels(&[]), team, labels(&[(TENANT_LABEL, ENABLED)])] {
            for ns in ["demo-1", "payments", "kube-system"] {
                assert_eq!(
                    s.is_tenant(ns, &l),
                    s.decide(ns, &l).is_tenant(),
                    "{ns} {l:?}"
                );
            }
        }
    }

    #[test]
    fn label_requirements_are_checked_like_the_api_server_does() {
        assert!(compile_requirement(&requirement("team", "In", &["a"])).is_ok());
        assert!(compile_requirement(&requirement("team", "Exists", &[])).is_ok());
        for (bad, says) in [
            (requirement("team", "In", &[]), "needs at least one value"),
            (
                requirement("team", "NotIn", &[]),
                "needs at least one value",
            ),
            (requirement("team", "Exists", &["a"]), "takes no values"),
            (requirement("team", "Equals", &["a"]), "is not an operator"),
        ] {
            let error = compile_requirement(&bad).unwrap_err();
            assert!(error.contains(says), "{bad:?}: {error}");
        }
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            Membership::OptedOut.to_string(),
            "namespace is labelled warmpool.io/tenant=disabled"
        );
        assert!(
            Membership::NoMatch
                .to_string()
                .contains("no tenant pattern")
        );
    }

    #[test]
    fn bad_globs_are_errors() {
        assert!(TenantSelector::new(&["demo-[".into()], None).is_err());
        for empty in [
            "demo-{a,}",
            "demo-{,a}",
            "demo-{a,,b}",
            "demo-{}",
            "x{a,{b,}}",
        ] {
            assert!(
                matches!(compile_glob(empty), Err(GlobError::EmptyAlternative(_))),
                "{empty}"
            );
        }
        for fine in [
            "demo-{a,b}",
            "demo-[{,]x",
            "demo-\\{,x",
            "demo-{a,[,]}",
            "x{a,{b,c}}",
        ] {
            assert!(compile_glob(fine).is_ok(), "{fine}");
        }
    }
}
