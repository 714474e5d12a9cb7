//! `comet run --watch`: rebuild a module when its source changes and swap the
//! new version in; on a failed build or validation the old one keeps serving.
//!
//! Changes are debounced, and the build's own outputs (`target/`,
//! `Cargo.lock`, hidden files) are ignored so a rebuild never triggers
//! another.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use comet_host::deploy::{Origin, Registry};
use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

/// Quiet time after the last change before rebuilding: an editor's save is
/// often several writes.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// A running watcher; dropping it stops watching.
pub(crate) struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

/// One watched module: its name and its source (crate directory or .wasm).
struct Watched {
    name: String,
    source: PathBuf,
}

impl Watched {
    /// Whether a change to `path` should rebuild this module.
    fn is_source(&self, path: &Path) -> bool {
        if self.source.is_file() {
            return path == self.source;
        }
        let Ok(relative) = path.strip_prefix(&self.source) else {
            return false;
        };
        let ignored = relative.components().any(|c| match c {
            Component::Normal(part) => {
                let part = part.to_string_lossy();
                part == "target" || part.starts_with('.')
            }
            _ => false,
        });
        !ignored && relative != Path::new("Cargo.lock")
    }
}

/// Watch `modules` and redeploy them into `registry` on change.
pub(crate) fn spawn(
    registry: Arc<Registry>,
    modules: Vec<(String, PathBuf)>,
    release: bool,
) -> anyhow::Result<Watcher> {
    let modules: Vec<Watched> = modules
        .into_iter()
        .map(|(name, source)| Watched {
            name,
            source: source.canonicalize().unwrap_or(source),
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, tx).context("cannot start the file watcher")?;
    for m in &modules {
        // A file is watched through its directory, so replacing it (as
        // editors and linkers do) is seen too.
        let (target, mode) = if m.source.is_file() {
            (
                m.source.parent().unwrap_or(Path::new(".")).to_path_buf(),
                RecursiveMode::NonRecursive,
            )
        } else {
            (m.source.clone(), RecursiveMode::Recursive)
        };
        debouncer
            .watcher()
            .watch(&target, mode)
            .with_context(|| format!("cannot watch {}", target.display()))?;
        eprintln!("comet: watching {} for {}", m.source.display(), m.name);
    }
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("comet-watch".into())
        .spawn(move || {
            for result in rx {
                let Ok(events) = result else { continue };
                for m in &modules {
                    if events.iter().any(|e| m.is_source(&e.path)) {
                        rebuild(&handle, &registry, m, release);
                    }
                }
            }
        })
        .context("cannot start the watch thread")?;
    Ok(Watcher {
        _debouncer: debouncer,
    })
}

fn rebuild(handle: &tokio::runtime::Handle, registry: &Registry, m: &Watched, release: bool) {
    eprintln!("comet: {} changed, rebuilding", m.source.display());
    let serving = registry
        .get(&m.name)
        .map(|info| format!("version {}", info.current.version))
        .unwrap_or_else(|| "nothing".into());
    let wasm = match crate::source::resolve_component(&m.source, release) {
        Ok(wasm) => wasm,
        Err(e) => {
            eprintln!(
                "comet: {}: build failed, still serving {serving}: {e:#}",
                m.name
            );
            return;
        }
    };
    let built = Instant::now();
    let bytes = match std::fs::read(&wasm) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("comet: {}: cannot read {}: {e}", m.name, wasm.display());
            return;
        }
    };
    // One save can arrive as two batches of events; the second build then
    // produces the same component, which is not a new version.
    let current = registry.get(&m.name).map(|info| info.current.hash);
    if current.as_deref() == Some(comet_host::runtime::content_hash(&bytes).as_str()) {
        eprintln!("comet: {}: unchanged, still serving {serving}", m.name);
        return;
    }
    match handle.block_on(registry.deploy(&m.name, bytes, Origin::File(wasm))) {
        Ok(info) => eprintln!(
            "comet: {}: reloaded, now serving version {} ({:.0} ms after the build)",
            m.name,
            info.version,
            built.elapsed().as_secs_f64() * 1000.0
        ),
        Err(e) => eprintln!(
            "comet: {}: not swapped in, still serving {serving}: {e}",
            m.name
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_outputs_are_not_sources() {
        let dir = tempfile::tempdir().unwrap();
        let m = Watched {
            name: "x".into(),
            source: dir.path().to_path_buf(),
        };
        assert!(m.is_source(&dir.path().join("src/lib.rs")));
        assert!(m.is_source(&dir.path().join("Cargo.toml")));
        assert!(!m.is_source(&dir.path().join("target/wasm32-wasip2/release/x.wasm")));
        assert!(!m.is_source(&dir.path().join("Cargo.lock")));
        assert!(!m.is_source(&dir.path().join(".git/index")));
        assert!(!m.is_source(Path::new("/elsewhere/src/lib.rs")));
    }
}
