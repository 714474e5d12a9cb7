//! Builds every guest the tests use (the examples and the misbehaving test
//! guests) for wasm32-wasip2, once per change, and writes their paths as
//! constants into `$OUT_DIR/guests.rs`. The guests that opt out of WASI are
//! also built for wasm32-unknown-unknown and made components, as `comet run
//! DIR` does: the link settings and the componentizing come from
//! `comet-guest-build`, the crate `comet run DIR` builds with.

use std::path::{Path, PathBuf};
use std::process::Command;

use comet_guest_build::{GUEST_TARGET, NO_WASI_TARGET, link_config};

/// Guests built without WASI: the constant, the workspace, the package,
/// its core module.
const NO_WASI: &[(&str, &str, &str, &str)] = &[(
    "NO_WASI_APP",
    "tests/guests",
    "no-wasi-app",
    "no_wasi_app.wasm",
)];

/// A guest: the constant naming it, its crate directory, its artifact.
type Guest = (&'static str, &'static str, &'static str);

/// Each guest workspace and the guests in it.
const WORKSPACES: &[(&str, &[Guest])] = &[
    (
        "guest-examples",
        &[
            ("HELLO", "hello", "hello.wasm"),
            ("CHAT", "chat", "chat.wasm"),
        ],
    ),
    (
        "tests/guests",
        &[
            ("MISBEHAVE", "misbehave", "misbehave.wasm"),
            ("CLI_APP", "cli-app", "cli-app.wasm"),
            ("CHANNELS_APP", "channels-app", "channels_app.wasm"),
            ("BAD_START", "bad-start", "bad_start.wasm"),
            ("REUSE_APP", "reuse-app", "reuse_app.wasm"),
            // The same crate as NO_WASI_APP, built with WASI, for the benchmark.
            ("NO_WASI_APP_WASIP2", "no-wasi-app", "no_wasi_app.wasm"),
        ],
    ),
];

fn main() {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"),
    );
    let root = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("repository root");
    let target_dir = root.join("target/guests");

    for watched in ["wit", "sdk/src", "sdk/Cargo.toml", "sdk/macros/src"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    // Whatever builds guests must add the target (rustup does not install the
    // targets a toolchain file lists by itself).
    let _ = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET, NO_WASI_TARGET])
        .status();

    let mut constants = String::new();
    for (workspace, guests) in WORKSPACES {
        let ws = root.join(workspace);
        println!("cargo:rerun-if-changed={}", ws.join("Cargo.toml").display());
        for (_, dir, _) in *guests {
            println!(
                "cargo:rerun-if-changed={}",
                ws.join(dir).join("src").display()
            );
            println!(
                "cargo:rerun-if-changed={}",
                ws.join(dir).join("Cargo.toml").display()
            );
        }
        build(&ws, &target_dir, GUEST_TARGET, None);
        for (name, dir, artifact) in *guests {
            let path = target_dir.join(GUEST_TARGET).join("release").join(artifact);
            assert!(
                path.is_file(),
                "building {dir} produced no {}",
                path.display()
            );
            constants.push_str(&format!(
                "/// `{workspace}/{dir}`, built for {GUEST_TARGET}.\npub const {name}: &str = {:?};\n",
                path.display().to_string()
            ));
        }
    }
    for (name, workspace, package, artifact) in NO_WASI {
        let ws = root.join(workspace);
        build(&ws, &target_dir, NO_WASI_TARGET, Some(package));
        let module = target_dir
            .join(NO_WASI_TARGET)
            .join("release")
            .join(artifact);
        let bytes = std::fs::read(&module).expect("read the core module");
        let path = comet_guest_build::componentize(&module, &bytes)
            .unwrap_or_else(|e| panic!("make a component of {}: {e}", module.display()));
        constants.push_str(&format!(
            "/// `{workspace}/{package}`, built without WASI and made a component.\npub const {name}: &str = {:?};\n",
            path.display().to_string()
        ));
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("guests.rs"), constants).expect("write guests.rs");
}

/// Build `package` (or the whole workspace) for `target`, linked as `comet
/// run DIR` links it.
fn build(workspace: &Path, target_dir: &Path, target: &str, package: Option<&str>) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "--release", "--target", target]);
    match package {
        Some(package) => command.args(["--package", package]),
        None => command.arg("--workspace"),
    };
    let status = command
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--config")
        .arg(link_config(target))
        // This script runs inside another cargo: keep its flags and wrappers
        // (clippy's, for one) away from the guest build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo to build the test guests");
    assert!(
        status.success(),
        "building the guests in {} failed",
        workspace.display()
    );
}
