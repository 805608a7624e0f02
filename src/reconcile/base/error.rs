//! What can go wrong while reconciling, each with a short label for the failure metric.

/// A failed reconcile step. The `Display` form says what was being done; the source says why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {}", concise(source))]
    Kube {
        /// What was being done, e.g. "apply Deployment warmpool-system/warmpool-prewarmer".
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{action}: leadership lost, write withheld")]
    NotLeader { action: String },
    #[error(
        "{action}: no answer within {after:?}, abandoned (it must land while the Lease is ours)"
    )]
    WriteTimeout {
        action: String,
        after: std::time::Duration,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot find warmpool's own Deployment: {0}")]
    Owner(String),
    #[error("invalid setting: {0}")]
    Settings(String),
}

/// An API error as one readable phrase (`409 Conflict: the object has been modified…`) instead of
/// kube's debug dump of the whole Status; other errors as they are.
fn concise(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => {
            format!("{} {}: {}", status.code, status.reason, status.message)
        }
        other => other.to_string(),
    }
}

impl Error {
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Error {
        Error::Kube {
            action: action.into(),
            source,
        }
    }

    /// The `kind` label of `warmpool_reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) => match status.code {
                    400 => "bad_request",
                    401 | 403 => "forbidden",
                    404 => "not_found",
                    409 => "conflict",
                    410 => "gone",
                    422 => "invalid",
                    429 => "throttled",
                    500..=599 => "server_error",
                    _ => "api_error",
                },
                kube::Error::SerdeError(_) => "decode",
                _ => "transport",
            },
            Error::NotLeader { .. } => "not_leader",
            Error::WriteTimeout { .. } => "timeout",
            Error::Encode { .. } => "encode",
            Error::Owner(_) => "owner",
            Error::Settings(_) => "settings",
        }
    }

    /// The HTTP status of an API error, if this is one.
    pub fn api_code(&self) -> Option<u16> {
        match self {
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } => Some(status.code),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        let status = kube::core::Status {
            code,
            message: "m".into(),
            reason: "R".into(),
            ..kube::core::Status::default()
        };
        Error::kube("apply x", kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn failures_are_labelled_by_kind() {
        assert_eq!(api(409).metric_label(), "conflict");
        assert_eq!(api(403).metric_label(), "forbidden");
        assert_eq!(api(422).metric_label(), "invalid");
        assert_eq!(api(503).metric_label(), "server_error");
        assert_eq!(api(418).metric_label(), "api_error");
        assert_eq!(api(422).api_code(), Some(422));
        assert_eq!(
            Error::NotLeader {
                action: "apply".into()
            }
            .metric_label(),
            "not_leader"
        );
        assert_eq!(api(409).to_string(), "apply x: 409 R: m");
    }
}
