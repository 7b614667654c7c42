//! Rewrites the committed generated files under `config/` (CRDs with their kustomization, and
//! the clusterctl artifacts). `operator/tests/artifacts.rs` fails until this is run after a
//! change to the CRDs or the manifests.
//!
//! ```sh
//! cargo run -p capms-operator --example regenerate
//! ```

use std::path::Path;

use capms_operator::manifests::{self, ManifestError};

fn main() -> Result<(), ManifestError> {
    // The workspace root is the operator crate's parent, wherever cargo was started.
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    manifests::write_config(&config)?;
    eprintln!("wrote {}", config.display());
    Ok(())
}
