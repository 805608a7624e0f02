//! warmpool's own Deployment, found from the pod's identity (`POD_NAME`/`POD_NAMESPACE` from the
//! downward API) through the pod's ReplicaSet, so that the objects the reconciler writes carry an
//! owner reference to it and `helm uninstall` removes them. Run from a kubeconfig there is no pod
//! and no owner reference.

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ListParams;
use kube::{Api, Client};

use super::error::Error;

/// The controlling owner of `kind` among `refs`, if any.
pub fn controller_of<'a>(refs: &'a [OwnerReference], kind: &str) -> Option<&'a OwnerReference> {
    refs.iter()
        .find(|r| r.controller == Some(true) && r.kind == kind && r.api_version == "apps/v1")
}

/// The owner reference the reconciler's objects carry: no `controller` (warmpool's Deployment
/// does not manage them as a workload controller would) and no `blockOwnerDeletion` (which would
/// need extra RBAC on the owner).
pub fn reference_to(deployment: &OwnerReference) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: deployment.name.clone(),
        uid: deployment.uid.clone(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// What the lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Deployment(OwnerReference),
    /// The pod is not run by a Deployment (a bare pod, a StatefulSet…): no owner reference.
    NoDeployment(String),
}

/// Pod → its controlling ReplicaSet → that ReplicaSet's controlling Deployment.
pub async fn own_deployment(client: &Client, namespace: &str, pod: &str) -> Result<Found, Error> {
    // Listed by name rather than read: the reconciler lists pods anyway, so this needs no
    // extra permission.
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().fields(&format!("metadata.name={pod}")))
        .await
        .map_err(|e| Error::kube(format!("read own Pod {namespace}/{pod}"), e))?;
    let Some(me) = listed.items.into_iter().next() else {
        return Err(Error::Owner(format!(
            "pod {namespace}/{pod} (POD_NAME/POD_NAMESPACE) does not exist"
        )));
    };
    let Some(rs_ref) = controller_of(
        me.metadata.owner_references.as_deref().unwrap_or_default(),
        "ReplicaSet",
    ) else {
        return Ok(Found::NoDeployment(format!(
            "pod {namespace}/{pod} is not controlled by a ReplicaSet"
        )));
    };
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
    let rs = replica_sets.get(&rs_ref.name).await.map_err(|e| {
        Error::kube(
            format!("read own ReplicaSet {namespace}/{}", rs_ref.name),
            e,
        )
    })?;
    match controller_of(
        rs.metadata.owner_references.as_deref().unwrap_or_default(),
        "Deployment",
    ) {
        Some(deployment) => Ok(Found::Deployment(reference_to(deployment))),
        None => Ok(Found::NoDeployment(format!(
            "ReplicaSet {namespace}/{} is not controlled by a Deployment",
            rs_ref.name
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller,
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn only_the_controlling_owner_of_the_kind_counts() {
        let refs = vec![
            r("ReplicaSet", "other", None),
            r("Deployment", "d", Some(true)),
            r("ReplicaSet", "warmpool-abc", Some(true)),
        ];
        assert_eq!(
            controller_of(&refs, "ReplicaSet").map(|o| o.name.as_str()),
            Some("warmpool-abc")
        );
        assert!(controller_of(&refs[..1], "ReplicaSet").is_none());
        let mut wrong_group = r("ReplicaSet", "x", Some(true));
        wrong_group.api_version = "example.com/v1".into();
        assert!(controller_of(&[wrong_group], "ReplicaSet").is_none());
    }

    #[test]
    fn the_reference_written_is_plain() {
        let got = reference_to(&r("Deployment", "warmpool", Some(true)));
        assert_eq!(
            serde_json::to_value(got).unwrap(),
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "warmpool", "uid": "uid-warmpool"})
        );
    }
}
