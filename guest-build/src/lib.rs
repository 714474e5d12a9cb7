//! Building a guest crate into a component (for `comet run DIR`, `comet
//! deploy DIR` and the test kit's build script): runs cargo for `wasm32-wasip2`
//! (adding the target with rustup if it is missing), shows cargo's own output,
//! and finds the `.wasm` it produced. A crate that opts out of WASI
//! (`[package.metadata.comet] wasi = false`) is built for
//! `wasm32-unknown-unknown` instead, and its core module made a component.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The Rust target guests are built for; it emits a component directly.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// The Rust target of a guest built without WASI. It emits a core module,
/// which [`build_crate`] turns into a component that imports only comet's
/// own interfaces: fewer imports to wire per instance, so a fresh event
/// costs less (BENCHMARKS.md, "Guests built without WASI").
pub const NO_WASI_TARGET: &str = "wasm32-unknown-unknown";

/// Initial linear memory of a guest built without WASI: the stack, static
/// data and a first heap, which the SDK's allocator uses before it grows
/// memory (a grown page costs the host a protection change per event).
pub const NO_WASI_INITIAL_MEMORY_BYTES: usize = 192 << 10;

/// Shadow-stack size guests are linked with (Rust's default is 1 MiB). The
/// stack sits at the bottom of linear memory, so a small one puts the stack
/// top, the static data and the first heap pages together in the low pages
/// the engine keeps resident between events. Deeper recursion traps as a
/// stack overflow, contained to that one event.
pub const GUEST_STACK_BYTES: usize = 64 << 10;

/// The `--config` argument that links a guest for `target` with
/// [`GUEST_STACK_BYTES`] of stack (and, without WASI, its initial memory).
/// Cargo merges it with the `rustflags` of the crate's own
/// `.cargo/config.toml`; a `RUSTFLAGS` environment variable replaces both.
pub fn link_config(target: &str) -> String {
    let mut flags = format!("\"-C\", \"link-arg=-zstack-size={GUEST_STACK_BYTES}\"");
    if target == NO_WASI_TARGET {
        flags.push_str(&format!(
            ", \"-C\", \"link-arg=--initial-memory={NO_WASI_INITIAL_MEMORY_BYTES}\""
        ));
    }
    format!("target.{target}.rustflags=[{flags}]")
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
    #[error("`rustup target add {target}` failed ({status})")]
    TargetInstall {
        /// The target.
        target: &'static str,
        /// How rustup exited.
        status: std::process::ExitStatus,
    },
    /// The crate's `Cargo.toml` could not be read.
    #[error("could not read {path}: {source}")]
    ReadManifest {
        /// The crate's `Cargo.toml`.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The crate's `Cargo.toml` is not valid TOML.
    #[error("{path} is not valid TOML: {source}")]
    ParseManifest {
        /// The crate's `Cargo.toml`.
        path: PathBuf,
        /// The parser's error.
        source: Box<toml::de::Error>,
    },
    /// `[package.metadata.comet] wasi` is not a boolean.
    #[error("{path}: [package.metadata.comet] wasi must be true or false, not a {found}")]
    WasiSetting {
        /// The crate's `Cargo.toml`.
        path: PathBuf,
        /// The TOML type it has instead.
        found: &'static str,
    },
    /// The core module built without WASI could not be made a component.
    #[error("could not make a component of {path}: {source}")]
    Componentize {
        /// The core module cargo built.
        path: PathBuf,
        /// wit-component's error, or the OS error reading or writing.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

/// Make sure `target` is installed, adding it with rustup if not. Without
/// rustup (a distribution's Rust), cargo's own error will say more.
pub fn ensure_target(target: &'static str) -> Result<(), BuildError> {
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
        .any(|l| l.trim() == target)
    {
        return Ok(());
    }
    eprintln!("comet: adding the {target} target with rustup");
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .map_err(|source| BuildError::Spawn {
            program: "rustup",
            source,
        })?;
    if !status.success() {
        return Err(BuildError::TargetInstall { target, status });
    }
    Ok(())
}

/// The Rust target of the crate whose `Cargo.toml` is at `path` and reads
/// `manifest`: [`NO_WASI_TARGET`] if its `[package.metadata.comet]` says
/// `wasi = false`, else [`GUEST_TARGET`]. Only the package's own metadata
/// counts, not `[workspace.metadata]`.
pub fn target_of(path: &Path, manifest: &str) -> Result<&'static str, BuildError> {
    let doc: toml::Table = toml::from_str(manifest).map_err(|e| BuildError::ParseManifest {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    let wasi = doc
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("comet"))
        .and_then(|c| c.get("wasi"));
    match wasi {
        None | Some(toml::Value::Boolean(true)) => Ok(GUEST_TARGET),
        Some(toml::Value::Boolean(false)) => Ok(NO_WASI_TARGET),
        Some(other) => Err(BuildError::WasiSetting {
            path: path.to_path_buf(),
            found: other.type_str(),
        }),
    }
}

/// Build the guest crate in `dir` and return the path of its component.
pub fn build_crate(dir: &Path, release: bool) -> Result<PathBuf, BuildError> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        return Err(BuildError::NotACrate(dir.to_path_buf()));
    }
    let text = std::fs::read_to_string(&manifest).map_err(|source| BuildError::ReadManifest {
        path: manifest.clone(),
        source,
    })?;
    let target = target_of(&manifest, &text)?;
    eprintln!("comet: building {} for {target}", dir.display());
    ensure_target(target)?;
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .arg("build")
        .args(["--target", target])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .arg("--config")
        .arg(link_config(target))
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
    let artifact = artifact.ok_or_else(|| BuildError::NoArtifact(dir.to_path_buf()))?;
    if target == NO_WASI_TARGET {
        let module = std::fs::read(&artifact).map_err(|e| BuildError::Componentize {
            path: artifact.clone(),
            source: e.into(),
        })?;
        warn_if_first_heap_is_short(&artifact, &module);
        return componentize(&artifact, &module);
    }
    Ok(artifact)
}

/// The SDK's allocator asks for its first 64 KiB segment from the heap in
/// the initial memory; if that heap is smaller, it grows memory instead,
/// in every event, which costs more than building without WASI saves.
const ALLOCATOR_SEGMENT_BYTES: u64 = 64 << 10;

/// Say so if `module` (the core module at `path`) leaves less than one allocator
/// segment of heap in its initial memory (its static data is too large).
/// A warning, not an error: the guest works, it is only slower.
fn warn_if_first_heap_is_short(path: &Path, module: &[u8]) {
    let Some(heap) = first_heap_bytes(module) else {
        return;
    };
    if heap < ALLOCATOR_SEGMENT_BYTES {
        eprintln!(
            "comet: warning: {} leaves {} KiB of heap in its initial memory, less than the \
             allocator's first {} KiB segment, so memory grows in every event (its static \
             data is too large for a build without WASI to pay; see the README)",
            path.display(),
            heap >> 10,
            ALLOCATOR_SEGMENT_BYTES >> 10
        );
    }
}

/// The bytes of heap a core module has in its initial memory: from its
/// exported `__heap_base` (which wasm-ld writes) to the end of its first
/// memory's initial pages. `None` if the module does not say.
fn first_heap_bytes(module: &[u8]) -> Option<u64> {
    use wasmparser::{ExternalKind, Operator, Payload, TypeRef};
    let mut imported_globals = 0u32;
    let mut globals = Vec::new();
    let mut initial_bytes = None;
    let mut heap_base = None;
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        match payload.ok()? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if matches!(import.ok()?.ty, TypeRef::Global(_)) {
                        imported_globals += 1;
                    }
                }
            }
            Payload::MemorySection(memories) => {
                if let Some(memory) = memories.into_iter().next() {
                    initial_bytes = Some(memory.ok()?.initial * 65536);
                }
            }
            Payload::GlobalSection(section) => {
                for global in section {
                    let op = global.ok()?.init_expr.get_operators_reader().read().ok()?;
                    globals.push(match op {
                        Operator::I32Const { value } => Some(u64::from(value as u32)),
                        _ => None,
                    });
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.ok()?;
                    if export.name == "__heap_base" && export.kind == ExternalKind::Global {
                        heap_base = Some(export.index);
                    }
                }
            }
            _ => {}
        }
    }
    let index = heap_base?.checked_sub(imported_globals)?;
    let base = (*globals.get(index as usize)?)?;
    initial_bytes?.checked_sub(base)
}

/// Turn `module`, the core module cargo wrote at `path` (built by
/// wit-bindgen's SDK, which embeds the component's type), into a component,
/// written next to it as `NAME.component.wasm`. The file is replaced whole
/// (written aside, then renamed), so a server or test never reads half of it.
pub fn componentize(path: &Path, module: &[u8]) -> Result<PathBuf, BuildError> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>| BuildError::Componentize {
        path: path.to_path_buf(),
        source,
    };
    let component = wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| failed(e.into()))?;
    let out = path.with_extension("component.wasm");
    let aside = path.with_extension(format!("component.wasm.{}", std::process::id()));
    std::fs::write(&aside, component)
        .and_then(|()| std::fs::rename(&aside, &out))
        .map_err(|e| failed(e.into()))?;
    Ok(out)
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

    #[test]
    fn the_crate_chooses_its_target() {
        let path = Path::new("/src/a/Cargo.toml");
        let target = |text: &str| target_of(path, text).map_err(|e| e.to_string());
        let plain = "[package]\nname = \"a\"\n";
        assert_eq!(target(plain), Ok(GUEST_TARGET));
        let with = |v: &str| format!("{plain}[package.metadata.comet]\nwasi = {v}\n");
        assert_eq!(target(&with("true")), Ok(GUEST_TARGET));
        assert_eq!(target(&with("false")), Ok(NO_WASI_TARGET));
        assert_eq!(
            target(&with("\"no\"")),
            Err(
                "/src/a/Cargo.toml: [package.metadata.comet] wasi must be true or false, \
                 not a string"
                    .into()
            )
        );
        let err = target("[package").unwrap_err();
        assert!(
            err.starts_with("/src/a/Cargo.toml is not valid TOML"),
            "{err}"
        );
    }

    #[test]
    fn reads_the_heap_left_in_the_initial_memory() {
        let module = |base: u32| {
            wat::parse_str(format!(
                r#"(module
                    (import "comet:edge/log@0.1.0" "log" (func))
                    (memory 3)
                    (global (mut i32) (i32.const 65536))
                    (global i32 (i32.const {base}))
                    (export "__heap_base" (global 1)))"#
            ))
            .unwrap()
        };
        // 192 KiB of initial memory: 112 KiB past a heap base of 80 KiB.
        assert_eq!(first_heap_bytes(&module(80 << 10)), Some(112 << 10));
        assert_eq!(first_heap_bytes(&module(150 << 10)), Some(42 << 10));
        assert_eq!(first_heap_bytes(b"not wasm"), None);
        let no_export = wat::parse_str("(module (memory 3))").unwrap();
        assert_eq!(first_heap_bytes(&no_export), None);
    }

    #[test]
    fn links_with_a_small_stack_and_without_wasi_a_first_heap() {
        assert_eq!(
            link_config(GUEST_TARGET),
            r#"target.wasm32-wasip2.rustflags=["-C", "link-arg=-zstack-size=65536"]"#
        );
        // tests/support/build.rs links the test guests with this function
        // too, so `comet run DIR` in the tests finds them built.
        assert_eq!(
            link_config(NO_WASI_TARGET),
            r#"target.wasm32-unknown-unknown.rustflags=["-C", "link-arg=-zstack-size=65536", "-C", "link-arg=--initial-memory=196608"]"#
        );
    }
}
