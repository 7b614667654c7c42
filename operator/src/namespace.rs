//! Reads and writes of one namespace of the management cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Api, Client};

/// The namespace of an object, with the client to reach it.
#[derive(Clone)]
pub struct Namespace {
    client: Client,
    name: String,
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Namespace {
    /// The namespace of the object `meta` describes.
    pub fn of(client: &Client, meta: &ObjectMeta) -> Self {
        Namespace { client: client.clone(), name: meta.namespace.clone().unwrap_or_default() }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}
