use comet_testkit::{Comet, get, guests, run_to_exit};

use crate::COMET;

/// Run `comet run PATH` on a file that must be refused, and return stderr.
fn refused(path: &str) -> anyhow::Result<String> {
    let (status, _, stderr) = run_to_exit(COMET, &["run", path, "--listen", "127.0.0.1:0"])?;
    assert!(!status.success(), "comet accepted {path}");
    Ok(stderr)
}

/// Files that are not handlers are refused at start, each with its own reason.
#[test]
fn bad_module_files_are_refused_with_the_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;

    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"this is not wasm at all")?;
    let err = refused(junk.to_str().unwrap_or_default())?;
    assert!(err.contains("not a WebAssembly file"), "{err}");

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module (func (export \"f\")))")?)?;
    let err = refused(core.to_str().unwrap_or_default())?;
    assert!(
        err.contains("core WebAssembly module, not a component"),
        "{err}"
    );

    let err = refused(guests::CLI_APP)?;
    assert!(err.contains("not a Comet handler"), "{err}");
    assert!(
        err.contains("does not export `comet:edge/handler@0.1.1`"),
        "{err}"
    );
    assert!(err.contains("wasi:cli/run"), "{err}");

    let truncated = dir.path().join("truncated.wasm");
    let hello = std::fs::read(guests::HELLO)?;
    std::fs::write(&truncated, &hello[..hello.len() / 2])?;
    let err = refused(truncated.to_str().unwrap_or_default())?;
    assert!(err.contains("not a valid WebAssembly component"), "{err}");

    let err = refused(dir.path().join("missing.wasm").to_str().unwrap_or_default())?;
    assert!(err.contains("does not exist"), "{err}");

    let err = refused(dir.path().to_str().unwrap_or_default())?;
    assert!(err.contains("has no Cargo.toml"), "{err}");
    Ok(())
}

/// `comet run DIR` builds a guest crate with cargo and serves it.
#[test]
fn run_builds_a_guest_crate() -> anyhow::Result<()> {
    let comet = Comet::start_crate(COMET, "guest-examples/hello")?;
    let r = get(&comet.url("/hello?name=crate"))?;
    assert_eq!(r.body, "hello, crate!\n");
    Ok(())
}

/// `--help` explains the commands and the limits.
#[test]
fn help_describes_run() -> anyhow::Result<()> {
    let (status, out, _) = run_to_exit(COMET, &["run", "--help"])?;
    assert!(status.success());
    for needle in [
        "--listen",
        "--deadline-ms",
        "--memory-mib",
        "guest crate",
        "Sandbox limits",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    Ok(())
}
