//! `comet run --watch`: rebuild a module when its source changes and swap the
//! new version in; on a failed build or validation the old one keeps serving.
//! What happens is told to the caller as [`WatchEvent`]s (the CLI prints
//! them).
//!
//! Changes are debounced, and the build's own outputs (`target/`,
//! `Cargo.lock`, hidden files) are ignored so a rebuild never triggers
//! another.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};

use super::startup::component;
use crate::deploy::{Origin, Registry};
use crate::runtime::content_hash;

/// Quiet time after the last change before rebuilding: an editor's save is
/// often several writes.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The file watcher did not start.
    #[error("cannot start the file watcher: {0}")]
    Start(notify::Error),
    /// A source cannot be watched.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: notify::Error,
    },
    /// The thread that rebuilds did not start.
    #[error("cannot start the watch thread: {0}")]
    Thread(std::io::Error),
}

/// What the watcher did, for the caller to tell the operator.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// Watching `source` for module `name`.
    Watching {
        /// The module.
        name: String,
        /// Its source.
        source: PathBuf,
    },
    /// `source` changed: rebuilding.
    Changed {
        /// The module.
        name: String,
        /// Its source.
        source: PathBuf,
    },
    /// The new version serves.
    Reloaded {
        /// The module.
        name: String,
        /// Its new version.
        version: u64,
        /// From the end of the build to the swap.
        swap: Duration,
    },
    /// The build made the component that serves already.
    Unchanged {
        /// The module.
        name: String,
        /// What serves (`version N`).
        serving: String,
    },
    /// The build, or the new version, failed; the old one serves on.
    Failed {
        /// The module.
        name: String,
        /// What serves (`version N`, or `nothing`).
        serving: String,
        /// `build failed`, or `not swapped in`.
        stage: &'static str,
        /// Why.
        error: String,
    },
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

/// Watch `modules` and redeploy them into `registry` on change (crates built
/// with cargo's release profile if `release`), telling `report` what
/// happens. Must be called inside a tokio runtime, where deploys run.
pub fn spawn(
    registry: Arc<Registry>,
    modules: Vec<(String, PathBuf)>,
    release: bool,
    report: impl Fn(WatchEvent) + Send + 'static,
) -> Result<Watcher, WatchError> {
    let modules: Vec<Watched> = modules
        .into_iter()
        .map(|(name, source)| Watched {
            name,
            source: source.canonicalize().unwrap_or(source),
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(DEBOUNCE, tx).map_err(WatchError::Start)?;
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
            .map_err(|source| WatchError::Watch {
                path: target.clone(),
                source,
            })?;
        report(WatchEvent::Watching {
            name: m.name.clone(),
            source: m.source.clone(),
        });
    }
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("comet-watch".into())
        .spawn(move || {
            for result in rx {
                let Ok(events) = result else { continue };
                for m in &modules {
                    if events.iter().any(|e| m.is_source(&e.path)) {
                        report(rebuild(&handle, &registry, m, release, &report));
                    }
                }
            }
        })
        .map_err(WatchError::Thread)?;
    Ok(Watcher {
        _debouncer: debouncer,
    })
}

/// Rebuild `m` and swap it in: what came of it.
fn rebuild(
    handle: &tokio::runtime::Handle,
    registry: &Registry,
    m: &Watched,
    release: bool,
    report: &impl Fn(WatchEvent),
) -> WatchEvent {
    report(WatchEvent::Changed {
        name: m.name.clone(),
        source: m.source.clone(),
    });
    let serving = registry
        .get(&m.name)
        .map(|info| format!("version {}", info.current.version))
        .unwrap_or_else(|| "nothing".into());
    let failed = |stage, error: String| WatchEvent::Failed {
        name: m.name.clone(),
        serving: serving.clone(),
        stage,
        error,
    };
    let (bytes, wasm) = match component(&m.source, release) {
        Ok(built) => built,
        Err(e) => return failed("build failed", e.to_string()),
    };
    let built = Instant::now();
    // One save can arrive as two batches of events; the second build then
    // produces the same component, which is not a new version.
    let current = registry.get(&m.name).map(|info| info.current.hash);
    if current.as_deref() == Some(content_hash(&bytes).as_str()) {
        return WatchEvent::Unchanged {
            name: m.name.clone(),
            serving,
        };
    }
    match handle.block_on(registry.deploy(&m.name, bytes, Origin::File(wasm))) {
        Ok(info) => WatchEvent::Reloaded {
            name: m.name.clone(),
            version: info.version,
            swap: built.elapsed(),
        },
        Err(e) => failed("not swapped in", e.to_string()),
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
