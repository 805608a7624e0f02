//! Apply and re-create: server-side apply with field manager `warmpool` and `force`; an object
//! whose immutable fields differ (a PriorityClass's value, a Deployment's selector) is deleted and
//! created anew when it carries our managed-by label.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::error::Error;
use crate::core::names::{FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL};

/// Server-side apply with field manager `warmpool` and `force`; returns the object as written.
/// When the API server refuses because an immutable field differs, an object that carries our
/// managed-by label is deleted and created anew.
pub async fn apply<K>(ctx: &Context, api: Api<K>, desired: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let what = || match desired.meta().namespace.as_deref() {
        Some(ns) => format!("apply {} {ns}/{name}", K::kind(&())),
        None => format!("apply {} {name}", K::kind(&())),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let status = match ctx
        .write(what, api.patch(&name, &params, &Patch::Apply(desired)))
        .await
    {
        Ok(written) => return Ok(written),
        Err(Error::Kube {
            source: kube::Error::Api(status),
            ..
        }) if is_immutable_field_change(&status) => status,
        Err(e) => return Err(e),
    };
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(what(), e))?;
    let ours = existing
        .as_ref()
        .is_some_and(|o| o.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY));
    if !ours {
        return Err(Error::kube(what(), kube::Error::Api(status)));
    }
    tracing::warn!(object = %what(), reason = %status.message, "an immutable field differs: re-creating");
    ctx.write(what, api.delete(&name, &DeleteParams::background()))
        .await?;
    ctx.write(what, api.patch(&name, &params, &Patch::Apply(desired)))
        .await
}

/// The API server's refusal to change a field that cannot change once set. It words this two
/// ways: "field is immutable" (a Deployment's selector) and "may not be changed in an update"
/// (a PriorityClass's value).
fn is_immutable_field_change(status: &kube::core::Status) -> bool {
    status.code == 422
        && (status.message.contains("immutable") || status.message.contains("may not be changed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> kube::core::Status {
        kube::core::Status {
            code,
            message: message.into(),
            ..Default::default()
        }
    }

    #[test]
    fn immutable_field_changes_are_recognised_in_both_wordings() {
        assert!(is_immutable_field_change(&status(
            422,
            "Deployment.apps \"x\" is invalid: spec.selector: Invalid value: ...: field is immutable"
        )));
        assert!(is_immutable_field_change(&status(
            422,
            "PriorityClass.scheduling.k8s.io \"warmpool-placeholder\" is invalid: value: Forbidden: may not be changed in an update."
        )));
        assert!(!is_immutable_field_change(&status(
            422,
            "spec.replicas: Invalid value: -1"
        )));
        assert!(!is_immutable_field_change(&status(
            409,
            "field is immutable"
        )));
    }
}
