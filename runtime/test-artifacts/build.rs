//! Builds the `guests/` workspace for `wasm32-wasip1` into `OUT_DIR` and
//! generates one `pub const NAME: &str = "/path/to/NAME.wasm"` per guest
//! binary, plus a `foreach_guest!` macro listing them all.
//!
//! Needs the target: `rustup target add wasm32-wasip1`.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest_dir
        .join("../../guests")
        .canonicalize()
        .expect("guests/ exists");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap());
    let target_dir = out_dir.join("guests");

    // Reproducibly (source paths remapped), like every guest a package
    // ships: see `tally-guest-build`.
    let root = guests.parent().expect("guests/ is in the checkout");
    let release = tally_guest_build::build(root, &guests, &target_dir);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&release).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "wasm") {
            names.push(path.file_stem().unwrap().to_string_lossy().into_owned());
        }
        // Rebuild when any source the guests were built from changes.
        if path.extension().is_some_and(|e| e == "d") {
            let deps = std::fs::read_to_string(&path).unwrap();
            for dep in deps.split_whitespace().skip(1) {
                let dep = dep.trim_end_matches(':');
                if !dep.is_empty() && !dep.ends_with('\\') {
                    println!("cargo:rerun-if-changed={dep}");
                }
            }
        }
    }
    names.sort();
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.lock").display()
    );

    let mut code = String::new();
    for name in &names {
        let konst = name.to_uppercase().replace('-', "_");
        let path = release.join(format!("{name}.wasm"));
        code.push_str(&format!(
            "/// `guests/…/{name}`, compiled to wasm32-wasip1.\npub const {konst}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    code.push_str("/// Every guest as `(file stem, path)`.\npub const ALL: &[(&str, &str)] = &[\n");
    for name in &names {
        let path = release.join(format!("{name}.wasm"));
        code.push_str(&format!(
            "    ({name:?}, {:?}),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    code.push_str("/// Calls `$mac!(NAME)` once for every guest.\n#[macro_export]\nmacro_rules! foreach_guest {\n    ($mac:ident) => {\n");
    for name in &names {
        code.push_str(&format!("        $mac!({});\n", name.replace('-', "_")));
    }
    code.push_str("    };\n}\n");
    std::fs::write(out_dir.join("guests.rs"), code).unwrap();
}
