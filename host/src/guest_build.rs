//! Building a guest crate into a component: runs cargo for `wasm32-wasip2`
//! (adding the target with rustup if it is missing), shows cargo's own output,
//! and finds the `.wasm` it produced.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Rust target guests are built for; it emits a component directly.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// Shadow-stack size guests are linked with (Rust's default is 1 MiB). The
/// stack sits at the bottom of linear memory, so a small one puts the stack
/// top, the static data and the first heap pages together in the low pages
/// the engine keeps resident between events. Deeper recursion traps as a
/// stack overflow, contained to that one event.
pub const GUEST_STACK_BYTES: usize = 64 << 10;

/// The `--config` argument that links a guest with [`GUEST_STACK_BYTES`] of
/// stack. Cargo appends it to any rustflags the crate already has.
pub fn stack_size_config() -> String {
    format!(
        "target.{GUEST_TARGET}.rustflags=[\"-C\", \"link-arg=-zstack-size={GUEST_STACK_BYTES}\"]"
    )
}

/// Why a guest crate could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The directory has no `Cargo.toml`.
    #[error("{0} is not a guest crate: it has no Cargo.toml")]
    NotACrate(PathBuf),
    /// cargo or rustup could not be run.
    #[error("could not run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Adding the target with rustup failed.
    #[error("`rustup target add {GUEST_TARGET}` failed ({0})")]
    TargetInstall(std::process::ExitStatus),
    /// cargo reported a failure (its messages were shown above).
    #[error("cargo build failed ({0}); see cargo's messages above")]
    CargoFailed(std::process::ExitStatus),
    /// cargo succeeded but produced no `.wasm` for the crate.
    #[error(
        "cargo built {0} but produced no .wasm file: is it a library with \
         `crate-type = [\"cdylib\"]`?"
    )]
    NoArtifact(PathBuf),
}

/// Make sure the guest target is installed, adding it with rustup if not.
/// Without rustup (a distribution's Rust), cargo's own error will say more.
pub fn ensure_target() -> Result<(), BuildError> {
    let listed = match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(_) => return Ok(()),
    };
    if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|l| l.trim() == GUEST_TARGET)
    {
        return Ok(());
    }
    eprintln!("comet: adding the {GUEST_TARGET} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .status()
        .map_err(|source| BuildError::Spawn {
            program: "rustup",
            source,
        })?;
    if !status.success() {
        return Err(BuildError::TargetInstall(status));
    }
    Ok(())
}

/// Build the guest crate in `dir` and return the path of its component.
pub fn build_crate(dir: &Path, release: bool) -> Result<PathBuf, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NotACrate(dir.to_path_buf()));
    }
    ensure_target()?;
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .arg("build")
        .args(["--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .arg("--config")
        .arg(stack_size_config())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if release {
        cargo.arg("--release");
    }
    let mut child = cargo.spawn().map_err(|source| BuildError::Spawn {
        program: "cargo",
        source,
    })?;
    let manifest = manifest.canonicalize().unwrap_or(manifest);
    let mut artifact = None;
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(path) = wasm_artifact(&line, &manifest) {
                artifact = Some(path);
            }
        }
    }
    let status = child.wait().map_err(|source| BuildError::Spawn {
        program: "cargo",
        source,
    })?;
    if !status.success() {
        return Err(BuildError::CargoFailed(status));
    }
    artifact.ok_or_else(|| BuildError::NoArtifact(dir.to_path_buf()))
}

/// The `.wasm` file of a `compiler-artifact` message for the crate at `manifest`.
fn wasm_artifact(line: &str, manifest: &Path) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg["reason"] != "compiler-artifact" {
        return None;
    }
    if Path::new(msg["manifest_path"].as_str()?) != manifest {
        return None;
    }
    msg["filenames"]
        .as_array()?
        .iter()
        .filter_map(|f| f.as_str())
        .find(|f| f.ends_with(".wasm"))
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_wasm_of_the_right_crate() {
        let manifest = Path::new("/src/hello/Cargo.toml");
        let ours = r#"{"reason":"compiler-artifact","manifest_path":"/src/hello/Cargo.toml","filenames":["/t/hello.wasm"]}"#;
        let dep = r#"{"reason":"compiler-artifact","manifest_path":"/src/dep/Cargo.toml","filenames":["/t/libdep.rlib"]}"#;
        assert_eq!(
            wasm_artifact(ours, manifest),
            Some(PathBuf::from("/t/hello.wasm"))
        );
        assert_eq!(wasm_artifact(dep, manifest), None);
        assert_eq!(wasm_artifact("not json", manifest), None);
    }
}
