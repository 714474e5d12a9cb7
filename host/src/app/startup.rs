//! Which version each module name serves when a host starts, and where a
//! module's component comes from.
//!
//! The policy: a name with an upload stored in the data directory serves
//! its newest upload (an operator deployed it on purpose; the manifest's
//! `path` is where it started), unless the sources are watched, where the
//! source is the truth; a name without an upload serves its `path` (a
//! `.wasm` file, or a guest crate built first); a name with neither serves
//! nothing until it is deployed; uploads of names the manifest does not list
//! are served too (routes decide whether anything reaches them).

use std::path::{Path, PathBuf};

use comet_config::manifest::{Manifest, ModuleEntry};
use comet_guest_build::BuildError;

use crate::deploy::{DeployError, Origin, Registry};

/// What one name serves after start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Its newest stored upload.
    Upload {
        /// The module.
        name: String,
        /// The version.
        version: u64,
        /// The manifest's path it serves instead, if it has one.
        instead_of: Option<PathBuf>,
    },
    /// The component at `path` (a crate built into `component`).
    File {
        /// The module.
        name: String,
        /// The manifest's path.
        path: PathBuf,
        /// The component served.
        component: PathBuf,
    },
    /// Nothing yet: no path and no upload.
    Nothing {
        /// The module.
        name: String,
    },
}

/// What a host serves after start, and the sources to watch.
#[derive(Debug, Default)]
pub struct Started {
    /// Each name, in the manifest's order, then the unlisted uploads.
    pub served: Vec<Served>,
    /// Names served from a path, with the path (what `--watch` watches).
    pub watched: Vec<(String, PathBuf)>,
}

/// Why a host could not serve a module at start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A stored upload does not load.
    #[error("cannot load the stored upload of {name}: {source}")]
    Restore {
        /// The module.
        name: String,
        /// Why.
        source: DeployError,
    },
    /// The module's source does not give a component.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The component does not load.
    #[error("cannot load {path}: {source}")]
    Load {
        /// The component.
        path: PathBuf,
        /// Why.
        source: DeployError,
    },
}

/// Why a module's path gives no component.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Nothing there.
    #[error("{0} does not exist")]
    NoSuchPath(PathBuf),
    /// The crate does not build.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The component cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The component.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The component file for `path`: a `.wasm` file as it is, or a guest crate
/// directory built first (cargo's output shown; `release`: its release
/// profile).
pub fn component_file(path: &Path, release: bool) -> Result<PathBuf, SourceError> {
    if path.is_dir() {
        return Ok(comet_guest_build::build_crate(path, release)?);
    }
    if !path.exists() {
        return Err(SourceError::NoSuchPath(path.to_path_buf()));
    }
    Ok(path.to_path_buf())
}

/// The bytes of the component for `path` (see [`component_file`]), and the
/// file they came from.
pub fn component(path: &Path, release: bool) -> Result<(Vec<u8>, PathBuf), SourceError> {
    let file = component_file(path, release)?;
    let bytes = std::fs::read(&file).map_err(|source| SourceError::Read {
        path: file.clone(),
        source,
    })?;
    Ok((bytes, file))
}

/// Deploy into `registry` what each of `manifest`'s names serves at start
/// (see the module docs); `watching`: the sources are watched, so a path
/// wins over an upload; `release`: crates are built with cargo's release
/// profile.
pub async fn serve_versions(
    registry: &Registry,
    manifest: &Manifest,
    watching: bool,
    release: bool,
) -> Result<Started, StartupError> {
    let stored = registry.stored_names();
    let mut started = Started::default();
    let restore = |name: &str| {
        let name = name.to_string();
        async move {
            registry
                .restore(&name)
                .await
                .map_err(|source| StartupError::Restore {
                    name: name.clone(),
                    source,
                })
                .map(|info| (name, info))
        }
    };
    for (name, ModuleEntry { path, .. }) in &manifest.modules {
        if stored.contains(name) && !(watching && path.is_some()) {
            let (name, info) = restore(name).await?;
            if let Some(info) = info {
                started.served.push(Served::Upload {
                    name,
                    version: info.version,
                    instead_of: path.clone(),
                });
            }
            continue;
        }
        let Some(path) = path else {
            started.served.push(Served::Nothing { name: name.clone() });
            continue;
        };
        let (bytes, component) = component(path, release)?;
        registry
            .deploy(name, bytes, Origin::File(component.clone()))
            .await
            .map_err(|source| StartupError::Load {
                path: component.clone(),
                source,
            })?;
        started.served.push(Served::File {
            name: name.clone(),
            path: path.clone(),
            component,
        });
        started.watched.push((name.clone(), path.clone()));
    }
    for name in stored {
        if !manifest.modules.contains_key(&name) {
            let (name, info) = restore(&name).await?;
            if let Some(info) = info {
                started.served.push(Served::Upload {
                    name,
                    version: info.version,
                    instead_of: None,
                });
            }
        }
    }
    Ok(started)
}
