use std::path::Path;
use std::time::Duration;

use comet_testkit::{Comet, get};

use crate::COMET;

/// Where the copied guest is built, shared between runs so only the first
/// one compiles the SDK.
const TARGET_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/watch-guest");

/// A standalone copy of the hello example in `dir`.
fn copy_hello(dir: &Path) -> anyhow::Result<()> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples");
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk")
        .canonicalize()?;
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::copy(examples.join("hello/src/lib.rs"), dir.join("src/lib.rs"))?;
    std::fs::copy(examples.join("Cargo.lock"), dir.join("Cargo.lock"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\ncomet-sdk = {{ path = {:?} }}\n\n[workspace]\n",
            sdk.display().to_string()
        ),
    )?;
    Ok(())
}

/// Change the source: the new behaviour is served. Break it: the error is
/// printed and the last good version keeps serving.
#[test]
fn watch_rebuilds_and_survives_a_broken_build() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let crate_dir = tmp.path().join("hello");
    copy_hello(&crate_dir)?;
    let dir = crate_dir.to_str().unwrap();
    let comet = Comet::start_with_env(
        COMET,
        &[dir, "--watch", "--debug"],
        &[("CARGO_TARGET_DIR", TARGET_DIR)],
    )?;
    let body = |comet: &Comet| get(&comet.url("/")).map(|r| r.body).unwrap_or_default();
    assert!(body(&comet).contains("comet hello example"));

    let lib = crate_dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib)?;
    std::fs::write(
        &lib,
        source.replace("comet hello example", "comet watched example"),
    )?;
    assert!(
        comet.wait_log("reloaded, now serving version 2", Duration::from_secs(180)),
        "comet's log:\n{}",
        comet.stderr()
    );
    assert!(body(&comet).contains("comet watched example"));

    let good = std::fs::read_to_string(&lib)?;
    std::fs::write(&lib, format!("{good}\nfn broken( {{\n"))?;
    assert!(
        comet.wait_log(
            "build failed, still serving version 2",
            Duration::from_secs(180)
        ),
        "{}",
        comet.stderr()
    );
    assert!(body(&comet).contains("comet watched example"));
    Ok(())
}
