//! Executing the glue's writes against the management cluster: [`KubeWriter`] implements core's
//! [`glue::Writer`], so the order and conditions of the writes are core's
//! ([`capms_core::glue::execute`]); this module only speaks Kubernetes.
//!
//! - Metadata and spec changes are one JSON patch that starts with `test
//!   /metadata/resourceVersion` ([`glue::ObjectPatch::json_patch`]): it applies only to the
//!   version the reconcile read.
//! - The status goes to the status subresource by forced server-side apply under one field
//!   manager (`capms-manager`), carrying the resourceVersion it was computed from, so a
//!   reconcile on a stale copy gets 409 instead of overwriting a newer status.
//! - Answers map onto core's [`WriteError`]; its class decides the retry.

use capms_core::api::capi::Cluster;
use capms_core::api::{MetalStackCluster, MetalStackFirewall, MetalStackMachine};
use capms_core::glue::{self, Kind, ObjectKey, Reconciled, Target, WriteError};
use capms_core::reconcile::{Event, EventType};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event as KubeEvent, EventType as KubeEventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;

/// The field manager of every server-side apply of the manager.
pub const FIELD_MANAGER: &str = "capms-manager";

/// Publishes one event about `object`; a failure is logged, never fails the reconcile.
pub async fn publish_event<K: Resource<DynamicType = ()>>(recorder: &Recorder, object: &K, event: &Event) {
    let type_ = match event.type_ {
        EventType::Normal => KubeEventType::Normal,
        EventType::Warning => KubeEventType::Warning,
    };
    let reason = event.reason.as_str();
    let kube_event = KubeEvent {
        type_,
        reason: reason.to_string(),
        note: Some(event.message.clone()),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&kube_event, &object.object_ref(&())).await {
        tracing::warn!(reason, %error, "cannot publish event");
    }
}

/// What an apiserver's refusal means to the glue. A 422 that names `/metadata/resourceVersion`
/// is our own failed `test` operation: a conflict, not a validation error.
pub fn write_error(error: kube::Error) -> WriteError {
    write_error_of(&error)
}

/// [`write_error`] of a borrowed error.
pub fn write_error_of(error: &kube::Error) -> WriteError {
    match error {
        kube::Error::Api(status) => {
            let message = status.message.clone();
            match status.code {
                409 => WriteError::Conflict,
                404 => WriteError::Gone,
                422 if message.contains("/metadata/resourceVersion") => WriteError::Conflict,
                400 | 422 => WriteError::Invalid(message),
                401 | 403 => WriteError::Forbidden(message),
                429 => WriteError::Throttled { retry_after: None },
                _ => WriteError::Unavailable(message),
            }
        }
        other => WriteError::Unavailable(other.to_string()),
    }
}

/// Writes `patch` conditional on the resourceVersion `meta` was read at; returns the object's
/// resourceVersion after it (the one read if there was nothing to write).
pub async fn patch<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    patch: &glue::ObjectPatch,
) -> Result<String, WriteError>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    if patch.is_empty() {
        return Ok(meta.resource_version.clone().unwrap_or_default());
    }
    let written = patched(api, meta, patch).await?;
    Ok(written.resource_version.unwrap_or_default())
}

/// [`patch`], answering the metadata as written.
async fn patched<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    patch: &glue::ObjectPatch,
) -> Result<ObjectMeta, WriteError>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    let operations: json_patch::Patch = serde_json::from_value(patch.json_patch(meta))
        .map_err(|error| WriteError::Invalid(format!("cannot encode the patch: {error}")))?;
    let name = meta.name.clone().unwrap_or_default();
    match api.patch(&name, &PatchParams::default(), &Patch::<()>::Json(operations)).await {
        Ok(written) => Ok(written.meta().clone()),
        Err(error) => Err(write_error(error)),
    }
}

/// The block-move handshake's live writes and reads ([`glue::gate`]), straight to the
/// apiserver (never through the informer caches).
#[derive(Clone)]
#[allow(missing_debug_implementations, reason = "a kube client only")]
pub struct LiveApiserver {
    pub client: Client,
}

#[async_trait::async_trait]
impl glue::Apiserver for LiveApiserver {
    async fn patch(
        &self,
        target: &Target,
        read: &ObjectMeta,
        patch: &glue::ObjectPatch,
    ) -> Result<ObjectMeta, WriteError> {
        let (client, namespace) = (self.client.clone(), target.key.namespace.as_str());
        match target.kind {
            Kind::Machine => {
                patched(&Api::<MetalStackMachine>::namespaced(client, namespace), read, patch).await
            }
            Kind::Cluster => {
                patched(&Api::<MetalStackCluster>::namespaced(client, namespace), read, patch).await
            }
            Kind::Firewall => {
                patched(&Api::<MetalStackFirewall>::namespaced(client, namespace), read, patch).await
            }
        }
    }

    async fn cluster_paused(&self, cluster: &ObjectKey) -> Result<bool, WriteError> {
        let api = Api::<Cluster>::namespaced(self.client.clone(), &cluster.namespace);
        let live = api.get_opt(&cluster.name).await.map_err(write_error)?;
        Ok(live.is_some_and(|cluster| cluster.spec_paused()))
    }
}

/// Writes `status` by forced server-side apply, conditional on `version`.
pub async fn apply_status<K>(
    api: &Api<K>,
    object: &K,
    version: &str,
    status: &K::Status,
) -> Result<(), WriteError>
where
    K: Reconciled + Resource<Scope = NamespaceResourceScope> + Debug,
{
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": object.name_any(), "resourceVersion": version},
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&object.name_any(), &params, &Patch::Apply(&body)).await {
        Ok(_) => Ok(()),
        Err(error) => Err(write_error(error)),
    }
}

/// The glue's writer over a kube client, in one namespace.
#[allow(missing_debug_implementations, reason = "holds API handles and the event recorder only")]
pub struct KubeWriter<'a, K: Resource<DynamicType = ()>> {
    pub api: Api<K>,
    pub firewalls: Api<MetalStackFirewall>,
    pub recorder: &'a Recorder,
}

#[async_trait::async_trait]
impl<K> glue::Writer<K> for KubeWriter<'_, K>
where
    K: Reconciled + Resource<Scope = NamespaceResourceScope> + Debug,
{
    async fn publish(&mut self, object: &K, event: &Event) {
        publish_event(self.recorder, object, event).await;
    }

    async fn patch(&mut self, object: &K, patch: &glue::ObjectPatch) -> Result<String, WriteError> {
        self::patch(&self.api, object.meta(), patch).await
    }

    async fn write_status(
        &mut self,
        object: &K,
        version: &str,
        status: &K::Status,
    ) -> Result<(), WriteError> {
        apply_status(&self.api, object, version, status).await
    }

    async fn create_firewall(&mut self, firewall: &MetalStackFirewall) -> Result<(), WriteError> {
        match self.firewalls.create(&PostParams::default(), firewall).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Err(WriteError::AlreadyExists),
            Err(error) => Err(write_error(error)),
        }
    }

    async fn read_firewall(
        &mut self,
        _namespace: &str,
        name: &str,
    ) -> Result<Option<MetalStackFirewall>, WriteError> {
        self.firewalls.get_opt(name).await.map_err(write_error)
    }

    async fn delete_firewall(
        &mut self,
        _namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<(), WriteError> {
        let preconditions =
            uid.map(|uid| Preconditions { uid: Some(uid.to_string()), resource_version: None });
        let params = DeleteParams { preconditions, ..DeleteParams::default() };
        self.firewalls.delete(name, &params).await.map(|_| ()).map_err(write_error)
    }
}
