//! Builds every guest the tests use (the examples and the misbehaving test
//! guests) for wasm32-wasip2, once per change, and writes their paths as
//! constants into `$OUT_DIR/guests.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// Link guests with a 64 KiB stack, as `comet run DIR` does
/// (`comet_host::guest_build::GUEST_STACK_BYTES`).
const STACK_CONFIG: &str =
    r#"target.wasm32-wasip2.rustflags=["-C", "link-arg=-zstack-size=65536"]"#;

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
        .args(["target", "add", TARGET])
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
        build(&ws, &target_dir);
        for (name, dir, artifact) in *guests {
            let path = target_dir.join(TARGET).join("release").join(artifact);
            assert!(
                path.is_file(),
                "building {dir} produced no {}",
                path.display()
            );
            constants.push_str(&format!(
                "/// `{workspace}/{dir}`, built for {TARGET}.\npub const {name}: &str = {:?};\n",
                path.display().to_string()
            ));
        }
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("guests.rs"), constants).expect("write guests.rs");
}

fn build(workspace: &Path, target_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--workspace", "--target", TARGET])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--config", STACK_CONFIG])
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
