//! Rules of the codebase, enforced: every crate's root file opens with a
//! `//!` overview (rust-analyzer's tidy test does the same).

use std::path::Path;

#[test]
fn every_crate_root_has_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut roots = Vec::new();
    for dir in ["runtime", "guests"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let krate = entry.unwrap().path();
            for file in ["src/lib.rs", "src/main.rs"] {
                if krate.join(file).exists() {
                    roots.push(krate.join(file));
                }
            }
        }
    }
    assert!(roots.len() >= 10, "found only {roots:?}");
    let missing: Vec<_> = roots
        .iter()
        .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
        .collect();
    assert!(
        missing.is_empty(),
        "crate roots without a `//!` overview: {missing:?}"
    );
}
