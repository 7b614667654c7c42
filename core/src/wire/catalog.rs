//! The catalog: `v1.PartitionResponse`, `v1.SizeResponse`, `v1.ImageResponse`,
//! `v1.ProjectResponse`.

use super::{WireError, nullable};
use crate::metal;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `v1.PartitionBootConfiguration` (required in partition responses; capms does not use it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PartitionBootConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imageurl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernelurl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commandline: Option<String>,
}

/// `v1.PartitionResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PartitionResponse {
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub bootconfig: PartitionBootConfiguration,
}

impl PartitionResponse {
    /// A partition known only by id, as embedded in a machine response.
    pub fn with_id(id: String) -> Self {
        PartitionResponse { id, ..PartitionResponse::default() }
    }
}

/// `v1.SizeConstraint`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SizeConstraint {
    /// `cores`, `memory`, `storage` or `gpu`.
    #[serde(default, rename = "type", deserialize_with = "nullable")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// The GPU model for `gpu` constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<String>,
}

/// `v1.SizeResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SizeResponse {
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub constraints: Vec<SizeConstraint>,
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
}

impl SizeResponse {
    /// A size known only by id, as embedded in a machine response.
    pub fn with_id(id: String) -> Self {
        SizeResponse { id, ..SizeResponse::default() }
    }
}

/// The expiration date answered for images of the domain model, which do not expire:
/// 9999-01-01T00:00:00Z (the spec requires the field).
pub const IMAGE_NEVER_EXPIRES: Timestamp = Timestamp::constant(253_370_764_800, 0);

/// `v1.ImageResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageResponse {
    #[serde(default, deserialize_with = "nullable")]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `machine`, `firewall`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<String>,
    /// Required by the spec, but a timestamp has no default: `None` when absent.
    #[serde(default, rename = "expirationDate", skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<Timestamp>,
}

impl ImageResponse {
    /// An image known only by id, as embedded in a machine allocation. The spec requires an
    /// expiration date; images served from a domain model never expire.
    pub fn with_id(id: String) -> Self {
        ImageResponse { id, expiration_date: Some(IMAGE_NEVER_EXPIRES), ..ImageResponse::default() }
    }
}

/// `v1.Meta`: masterdata's entity metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apiversion: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// `v1.ProjectResponse` (proxied from masterdata-api; nothing is required by the spec).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProjectResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

fn require_id(entity: &'static str, id: String) -> Result<String, WireError> {
    if id.is_empty() { Err(WireError::Missing { entity, field: "id" }) } else { Ok(id) }
}

impl TryFrom<PartitionResponse> for metal::Partition {
    type Error = WireError;

    fn try_from(response: PartitionResponse) -> Result<Self, WireError> {
        Ok(metal::Partition {
            id: require_id("partition", response.id)?,
            name: response.name.unwrap_or_default(),
            description: response.description.unwrap_or_default(),
            labels: response.labels.unwrap_or_default(),
        })
    }
}

impl From<&metal::Partition> for PartitionResponse {
    fn from(partition: &metal::Partition) -> Self {
        PartitionResponse {
            id: partition.id.clone(),
            name: Some(partition.name.clone()),
            description: Some(partition.description.clone()),
            labels: Some(partition.labels.clone()),
            bootconfig: PartitionBootConfiguration::default(),
        }
    }
}

impl From<SizeConstraint> for metal::SizeConstraint {
    /// metal-api omits zero bounds (`omitempty`), so an absent bound is 0.
    fn from(constraint: SizeConstraint) -> Self {
        metal::SizeConstraint {
            kind: constraint.kind,
            min: constraint.min.unwrap_or_default(),
            max: constraint.max.unwrap_or_default(),
        }
    }
}

impl TryFrom<SizeResponse> for metal::Size {
    type Error = WireError;

    fn try_from(response: SizeResponse) -> Result<Self, WireError> {
        Ok(metal::Size {
            id: require_id("size", response.id)?,
            name: response.name.unwrap_or_default(),
            description: response.description.unwrap_or_default(),
            constraints: response.constraints.into_iter().map(metal::SizeConstraint::from).collect(),
            labels: response.labels,
        })
    }
}

impl From<&metal::Size> for SizeResponse {
    fn from(size: &metal::Size) -> Self {
        let constraint = |c: &metal::SizeConstraint| SizeConstraint {
            kind: c.kind.clone(),
            min: Some(c.min),
            max: Some(c.max),
            identifier: None,
        };
        SizeResponse {
            id: size.id.clone(),
            name: Some(size.name.clone()),
            description: Some(size.description.clone()),
            constraints: size.constraints.iter().map(constraint).collect(),
            labels: size.labels.clone(),
        }
    }
}

/// Features this version of capms does not know are dropped: they cannot make an image
/// usable for a role capms allocates.
fn parse_features(features: Vec<String>) -> BTreeSet<metal::ImageFeature> {
    let parse = |feature: String| match feature.as_str() {
        "machine" => Some(metal::ImageFeature::Machine),
        "firewall" => Some(metal::ImageFeature::Firewall),
        _ => None,
    };
    features.into_iter().filter_map(parse).collect()
}

impl TryFrom<ImageResponse> for metal::Image {
    type Error = WireError;

    fn try_from(response: ImageResponse) -> Result<Self, WireError> {
        Ok(metal::Image {
            id: require_id("image", response.id)?,
            name: response.name.unwrap_or_default(),
            description: response.description.unwrap_or_default(),
            url: response.url.unwrap_or_default(),
            features: parse_features(response.features.unwrap_or_default()),
            classification: response.classification.unwrap_or_default(),
        })
    }
}

impl From<&metal::Image> for ImageResponse {
    fn from(image: &metal::Image) -> Self {
        ImageResponse {
            id: image.id.clone(),
            name: Some(image.name.clone()),
            description: Some(image.description.clone()),
            url: Some(image.url.clone()),
            features: Some(image.features.iter().map(|feature| feature.as_str().to_string()).collect()),
            classification: Some(image.classification.clone()),
            expiration_date: Some(IMAGE_NEVER_EXPIRES),
        }
    }
}

impl TryFrom<ProjectResponse> for metal::Project {
    type Error = WireError;

    fn try_from(response: ProjectResponse) -> Result<Self, WireError> {
        let id = response.meta.and_then(|meta| meta.id).unwrap_or_default();
        Ok(metal::Project {
            id: require_id("project", id)?,
            name: response.name.unwrap_or_default(),
            description: response.description.unwrap_or_default(),
            tenant_id: response.tenant_id.unwrap_or_default(),
        })
    }
}

impl From<&metal::Project> for ProjectResponse {
    fn from(project: &metal::Project) -> Self {
        ProjectResponse {
            meta: Some(Meta {
                id: Some(project.id.clone()),
                kind: Some("Project".to_string()),
                apiversion: Some("v1".to_string()),
                version: None,
            }),
            name: Some(project.name.clone()),
            description: Some(project.description.clone()),
            tenant_id: Some(project.tenant_id.clone()),
        }
    }
}
