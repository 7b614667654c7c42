//! The repository is self-contained: no code or script reaches outside the checkout for the
//! metal-api spec, the Cluster API CRDs or anything else of the project's shared reference folder.
//!
//! Tests read their reference data from `vendor/` (see `vendor/README.md`), so a fresh clone with
//! nothing beside it passes the README test command. This test scans the repository's files
//! (`git ls-files`: tracked plus untracked-but-not-ignored; without git, a walk of the tree that
//! skips build output, tool installs and `.git/`) and fails naming `file:line` for every line of
//! code or script that names the sibling `shared` folder or its `capi-crds`/`metal-api` data.
//! Code is `*.rs`, `*.toml`, `*.sh`, `*.py`, `*.js`, `*.ts`, `*.yaml`, `*.yml`, the
//! `Dockerfile` and everything under `scripts/` and `.ci/`. Docs (`*.md` and the rest) may still
//! mention the shared folder as reference reading.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What code may not name. Built from pieces so that this file does not match itself.
const FORBIDDEN: [&str; 3] =
    [concat!("..", "/shared"), concat!("shared", "/capi-crds"), concat!("shared", "/metal-api")];

/// Folders the fallback walk skips: build output, installed tools, caches, git's own data.
const SKIPPED_FOLDERS: [&str; 9] = [
    ".git",
    "target",
    ".venv",
    "node_modules",
    ".cache",
    ".wire-proof",
    "__pycache__",
    ".hypothesis",
    ".schemathesis",
];

const CODE_EXTENSIONS: [&str; 8] = ["rs", "toml", "sh", "py", "js", "ts", "yaml", "yml"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's files, relative to its root with `/` separators.
fn files(root: &Path) -> Vec<String> {
    let listed = Command::new("git")
        .args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        .current_dir(root)
        .output();
    match listed {
        Ok(output) if output.status.success() => String::from_utf8(output.stdout)
            .expect("git ls-files prints UTF-8 paths")
            .split('\0')
            .filter(|path| !path.is_empty())
            .map(str::to_string)
            .collect(),
        _ => {
            let mut found = Vec::new();
            walk(root, "", &mut found);
            found
        }
    }
}

fn walk(folder: &Path, prefix: &str, found: &mut Vec<String>) {
    let entries = std::fs::read_dir(folder).unwrap_or_else(|error| panic!("{}: {error}", folder.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = format!("{prefix}{name}");
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            if !SKIPPED_FOLDERS.contains(&name.as_str()) {
                walk(&entry.path(), &format!("{relative}/"), found);
            }
        } else if kind.is_file() {
            found.push(relative);
        }
    }
}

fn is_code(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let extension = name.rsplit_once('.').map(|(_, extension)| extension);
    path.starts_with("scripts/")
        || path.starts_with(".ci/")
        || name == "Dockerfile"
        || extension.is_some_and(|extension| CODE_EXTENSIONS.contains(&extension))
}

/// `file:line: text` for every line of `text` that names a forbidden path.
fn offenders(path: &str, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| FORBIDDEN.iter().any(|forbidden| line.contains(forbidden)))
        .map(|(index, line)| format!("{path}:{}: {}", index + 1, line.trim()))
        .collect()
}

#[test]
fn no_code_reads_outside_the_repository() {
    let root = repository();
    let code: Vec<String> = files(&root).into_iter().filter(|path| is_code(path)).collect();
    assert!(
        code.iter().any(|path| path == "tests/tests/self_contained.rs"),
        "the scan does not see this file: {} code files found under {}",
        code.len(),
        root.display()
    );
    let mut found = Vec::new();
    for path in &code {
        let bytes = match std::fs::read(root.join(path)) {
            Ok(bytes) => bytes,
            // Listed by git but deleted in the working tree.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => panic!("{path}: {error}"),
        };
        found.extend(offenders(path, &String::from_utf8_lossy(&bytes)));
    }
    assert!(
        found.is_empty(),
        "code and scripts must read reference data from vendor/ (see vendor/README.md), not from \
         the shared folder beside the repository:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scan_recognizes_code_and_forbidden_paths() {
    for code in
        ["tests/src/spec.rs", "Cargo.toml", "scripts/wire-proof", ".ci/run", "wire-proof/x.py", "Dockerfile"]
    {
        assert!(is_code(code), "{code} is code");
    }
    for doc in ["README.md", "vendor/metal-api/SOURCE.md", "wire-proof/requirements.txt"] {
        assert!(!is_code(doc), "{doc} is not code");
    }
    let text = format!("fine\nlet a = \"{}/x\";\nalso fine\n{} here", FORBIDDEN[0], FORBIDDEN[2]);
    assert_eq!(
        offenders("a.rs", &text),
        [format!("a.rs:2: let a = \"{}/x\";", FORBIDDEN[0]), format!("a.rs:4: {} here", FORBIDDEN[2])]
    );
    assert!(offenders("a.rs", "vendor/metal-api/metal-api.json\nvendor/capi-crds/").is_empty());
}
