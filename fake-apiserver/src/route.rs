//! Request paths and query strings, parsed the way the apiserver's router reads them.

use std::collections::BTreeMap;

/// What a path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/version`
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/api/v1` or `/apis/{group}/{version}`
    Resources {
        group: String,
        version: String,
    },
    /// Anything below a group version.
    Resource(ResourcePath),
    Unknown,
}

/// `.../{plural}`, `.../namespaces/{ns}/{plural}[/{name}[/{subresource}]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parses a request path (without query).
pub(crate) fn parse(path: &str) -> Route {
    let segments: Vec<&str> = path.split('/').filter(|segment| !segment.is_empty()).collect();
    match segments.as_slice() {
        ["version"] => Route::Version,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["api", version] => Route::Resources { group: String::new(), version: (*version).to_owned() },
        ["apis", group, version] => {
            Route::Resources { group: (*group).to_owned(), version: (*version).to_owned() }
        }
        ["api", version, rest @ ..] => resource("", version, rest),
        ["apis", group, version, rest @ ..] => resource(group, version, rest),
        _ => Route::Unknown,
    }
}

fn resource(group: &str, version: &str, rest: &[&str]) -> Route {
    // `namespaces/{name}/status` and `/finalize` are subresources of a Namespace, everything
    // else below `namespaces/{ns}/` is a namespaced resource.
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, tail @ ..] if !["status", "finalize"].contains(plural) => {
            (Some(*namespace), [&[*plural], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, subresource] => (*plural, Some(*name), Some(*subresource)),
        _ => return Route::Unknown,
    };
    Route::Resource(ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        plural: plural.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        subresource: subresource.map(str::to_owned),
    })
}

/// Decoded query parameters (the last value of a repeated key wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query {
    params: BTreeMap<String, String>,
}

impl Query {
    pub(crate) fn parse(query: &str) -> Self {
        Self { params: form_urlencoded::parse(query.as_bytes()).into_owned().collect() }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str).filter(|value| !value.is_empty())
    }

    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        subresource: Option<&str>,
    ) -> Route {
        Route::Resource(ResourcePath {
            group: group.to_owned(),
            version: "v1".to_owned(),
            plural: plural.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            subresource: subresource.map(str::to_owned),
        })
    }

    #[test]
    fn parses_every_shape() {
        assert_eq!(parse("/api/v1/namespaces"), path("", "namespaces", None, None, None));
        assert_eq!(parse("/api/v1/namespaces/a"), path("", "namespaces", None, Some("a"), None));
        assert_eq!(
            parse("/api/v1/namespaces/a/status"),
            path("", "namespaces", None, Some("a"), Some("status"))
        );
        assert_eq!(parse("/api/v1/namespaces/a/configmaps"), path("", "configmaps", Some("a"), None, None));
        assert_eq!(
            parse("/apis/g/v1/namespaces/a/things/b/status"),
            path("g", "things", Some("a"), Some("b"), Some("status"))
        );
        assert_eq!(parse("/apis/g/v1/things"), path("g", "things", None, None, None));
        assert_eq!(parse("/version"), Route::Version);
        assert_eq!(parse("/apis/g/v1/a/b/c/d"), Route::Unknown);
    }

    #[test]
    fn decodes_query() {
        let query = Query::parse("labelSelector=a+in+%28x%2Cy%29&watch=true&empty=");
        assert_eq!(query.get("labelSelector"), Some("a in (x,y)"));
        assert!(query.flag("watch"));
        assert_eq!(query.get("empty"), None);
    }
}
