//! The dependency direction of PRODUCT.md §2, checked on the real resolve graph.
//!
//! `capms-core` stays pure: no Kubernetes client or runtime, no tokio, no HTTP in its normal
//! dependency tree. `capms-backend-sim` and `capms-sim-scenarios` never reach the Kubernetes
//! client or reqwest (backend-sim may use axum and tokio for its HTTP front).
//! Dev- and build-dependencies are not followed: tests and build scripts may use anything.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use cargo_metadata::{DependencyKind, Metadata, MetadataCommand, PackageId};

fn workspace_metadata() -> Metadata {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace root");
    MetadataCommand::new().manifest_path(root.join("Cargo.toml")).exec().expect("cargo metadata runs")
}

/// Walks the normal dependencies of the workspace package `root` breadth first (for any target)
/// and returns the shortest path to every `forbidden` package it reaches, such as
/// `capms-core -> kube -> kube-client`.
fn forbidden_paths(metadata: &Metadata, root: &str, forbidden: &[&str]) -> Vec<String> {
    let resolve = metadata.resolve.as_ref().expect("cargo metadata resolves the dependency graph");
    let start = &metadata
        .workspace_packages()
        .into_iter()
        .find(|package| package.name == root)
        .unwrap_or_else(|| panic!("{root} is a workspace package"))
        .id;
    // Every package reached, with the package it was first reached from.
    let mut reached_from: BTreeMap<&PackageId, Option<&PackageId>> = BTreeMap::from([(start, None)]);
    let mut queue = VecDeque::from([start]);
    let mut found = Vec::new();
    while let Some(id) = queue.pop_front() {
        if forbidden.contains(&metadata[id].name.as_str()) {
            let mut path = vec![metadata[id].name.to_string()];
            let mut at = id;
            while let Some(Some(parent)) = reached_from.get(at) {
                path.push(metadata[*parent].name.to_string());
                at = parent;
            }
            path.reverse();
            found.push(path.join(" -> "));
        }
        for dep in &resolve[id].deps {
            let normal = dep.dep_kinds.iter().any(|info| info.kind == DependencyKind::Normal);
            if normal && !reached_from.contains_key(&dep.pkg) {
                reached_from.insert(&dep.pkg, Some(id));
                queue.push_back(&dep.pkg);
            }
        }
    }
    found
}

fn assert_no_forbidden(metadata: &Metadata, root: &str, forbidden: &[&str]) {
    let found = forbidden_paths(metadata, root, forbidden);
    assert!(
        found.is_empty(),
        "{root} must not depend on {forbidden:?} (PRODUCT.md §2), but its normal dependency tree has:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn core_has_no_kube_client_runtime_or_http() {
    let metadata = workspace_metadata();
    assert_no_forbidden(
        &metadata,
        "capms-core",
        &["kube-client", "kube-runtime", "tokio", "reqwest", "hyper"],
    );
}

#[test]
fn simulators_have_no_kube_client_or_reqwest() {
    let metadata = workspace_metadata();
    for root in ["capms-backend-sim", "capms-sim-scenarios"] {
        assert_no_forbidden(&metadata, root, &["kube-client", "kube-runtime", "reqwest"]);
    }
}

/// Guards the two tests above against a walk that silently sees nothing.
#[test]
fn the_walk_follows_normal_dependencies_only() {
    let metadata = workspace_metadata();
    assert_eq!(
        forbidden_paths(&metadata, "capms-core", &["thiserror-impl"]),
        ["capms-core -> thiserror -> thiserror-impl"]
    );
    // proptest is a dev-dependency of capms-core: not part of its normal tree.
    assert_eq!(forbidden_paths(&metadata, "capms-core", &["proptest"]), Vec::<String>::new());
}
