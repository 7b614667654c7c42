//! Credentials Secrets stay until the clusters that use them are gone.
//!
//! A MetalStackCluster with `spec.credentialsRef` needs its Secret until its last metal-api
//! object is freed. Deleting a namespace deletes the Secret and the cluster at once: without
//! protection the Secret goes first, every later reconcile fails with "credentials Secret …
//! does not exist", the cluster's finalizer never finishes, the namespace stays Terminating and the
//! machines stay allocated.
//!
//! Expected flow:
//! 1. The cluster controller reads the Secret of a MetalStackCluster (every reconcile does, to
//!    build its client) and, if the Secret is not being deleted (usable or not: its label also
//!    makes a fix of it reconcile the cluster at once), adds [`CREDENTIALS_FINALIZER`]
//!    and the label [`CREDENTIALS_LABEL`] when they are missing ([`protect`]), and CAPI's
//!    [`MOVE_LABEL`], so that `clusterctl move` takes the Secret along with the cluster (it is
//!    outside the cluster's owner chain; without it the moved cluster cannot reach metal-api).
//! 2. The credentials controller watches the metadata (never the data) of only the Secrets
//!    with that label. For each it lists the MetalStackClusters of the Secret's namespace (all
//!    of them, whatever `--watch-filter` says, because a cluster of another manager needs the
//!    Secret just as much); when none names the Secret, it removes the finalizer and the label
//!    ([`release`]). The move label stays: a Secret moved with its namespace does no harm,
//!    and the label may have been the user's.
//! 3. It runs when the Secret changes (a deletion sets its deletionTimestamp), when a
//!    MetalStackCluster that is being deleted changes or disappears (mapped to the Secret it
//!    names), and every [`RESYNC`].
//!
//! Guarantees: a Secret named by a MetalStackCluster that the manager has reconciled once is
//! not removed from the API before that cluster is (a deleted Secret stays readable while it
//! waits); a Secret that no cluster names loses the finalizer at its deletion, when the last
//! cluster naming it is deleted, or within a resync. A release that races a cluster starting
//! to name the Secret protects it again at once ([`release`] lists the clusters again).
//!
//! Assumptions: the manager may patch Secrets (its ClusterRole says so). Without that right,
//! or if an admission policy refuses the patch, clusters still work; the cluster controller
//! reports `CredentialsNotProtected` events and a namespace deletion may stick as before. A
//! Secret that is already being deleted when a cluster first names it cannot get a finalizer
//! (the apiserver forbids new finalizers on deleted objects). Without a running manager
//! (capms uninstalled) nothing removes the finalizer: `docs/mini-lab.md` says how to.

use crate::apply;
use crate::error::OperatorError;
use crate::namespace::Namespace;
use capms_core::api::MetalStackCluster;
use capms_core::api::capi::MOVE_LABEL;
use capms_core::glue::ObjectPatch;
use capms_core::reconcile::FinalizerAction;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::ListParams;
use kube::core::PartialObjectMeta;
use std::collections::BTreeMap;
use std::time::Duration;

/// The finalizer on a credentials Secret while a MetalStackCluster names it.
pub const CREDENTIALS_FINALIZER: &str = "metal-stack.infrastructure.cluster.x-k8s.io/credentials";

/// The label that marks a Secret as protected, so that the manager watches only those Secrets.
pub const CREDENTIALS_LABEL: &str = "metal-stack.infrastructure.cluster.x-k8s.io/credentials";

/// How often a protected Secret is checked without any event (a cluster's credentialsRef
/// changed to another Secret).
pub const RESYNC: Duration = Duration::from_secs(10 * 60);

/// Adds the finalizer, the label and the move label to the credentials Secret (`secret`, its metadata) of a
/// live cluster, if missing.
pub async fn protect(client: &Client, secret: &ObjectMeta) -> Result<(), OperatorError> {
    if secret.deletion_timestamp.is_some() {
        return Ok(());
    }
    let mut patch = ObjectPatch::default();
    patch.finalizer(secret, CREDENTIALS_FINALIZER, FinalizerAction::Add);
    let labels =
        [(CREDENTIALS_LABEL.to_string(), "true".to_string()), (MOVE_LABEL.to_string(), String::new())];
    patch.labels(secret, &BTreeMap::from(labels));
    let namespace = Namespace::of(client, secret);
    apply::patch(&namespace.api::<SecretMeta>(), secret, &patch).await?;
    Ok(())
}

/// Removes the finalizer and the label once no MetalStackCluster of the namespace names the
/// Secret, and says whether it did (if not, look again after [`RESYNC`]).
///
/// A cluster that starts naming the Secret between the list and the patch would find the
/// finalizer still there and write nothing, so the clusters are listed again after the patch
/// and the Secret is protected again if one names it now, or if that cannot be told (the list
/// failed): once unlabelled, the Secret leaves this controller's watch, and a retry would not
/// find it.
pub async fn release(client: &Client, secret: &ObjectMeta) -> Result<bool, OperatorError> {
    let namespace = Namespace::of(client, secret);
    let name = secret.name.clone().unwrap_or_default();
    if named_by_a_cluster(&namespace, &name).await? {
        return Ok(false);
    }
    let mut patch = ObjectPatch::default();
    patch.finalizer(secret, CREDENTIALS_FINALIZER, FinalizerAction::Remove);
    patch.remove_label(secret, CREDENTIALS_LABEL);
    if patch.is_empty() {
        return Ok(true);
    }
    let secrets = namespace.api::<SecretMeta>();
    apply::patch(&secrets, secret, &patch).await?;
    if named_by_a_cluster(&namespace, &name).await.unwrap_or(true) {
        if let Some(current) = secrets.get_opt(&name).await? {
            protect(client, &current.metadata).await?;
        }
        return Ok(false);
    }
    tracing::info!(secret = %name, namespace = ?secret.namespace, "no MetalStackCluster names the credentials Secret any more: released");
    Ok(true)
}

/// True if a MetalStackCluster of `namespace` (any, whatever `--watch-filter` says) names the
/// Secret `name`.
async fn named_by_a_cluster(namespace: &Namespace, name: &str) -> Result<bool, OperatorError> {
    let clusters = namespace.api::<MetalStackCluster>().list(&ListParams::default()).await?;
    Ok(clusters.items.iter().any(|cluster| credentials_name(cluster) == Some(name)))
}

/// A Secret's metadata: what this module reads and writes of a Secret, so that neither the
/// watch nor the answers to its patches carry the credentials.
pub type SecretMeta = PartialObjectMeta<Secret>;

/// The name of the Secret a MetalStackCluster takes its credentials from.
pub fn credentials_name(cluster: &MetalStackCluster) -> Option<&str> {
    cluster.spec.credentials_ref.as_ref().map(|reference| reference.name.as_str())
}
