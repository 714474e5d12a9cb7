//! Where a module's component comes from: a `.wasm` file as it is, or a
//! guest crate directory built first (for `wasm32-wasip2`, or without WASI
//! if the crate says so).

use std::path::{Path, PathBuf};

use anyhow::bail;

/// The component file for `path`, building it if `path` is a crate.
pub(crate) fn resolve_component(path: &Path, release: bool) -> anyhow::Result<PathBuf> {
    if path.is_dir() {
        return Ok(comet_guest_build::build_crate(path, release)?);
    }
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    Ok(path.to_path_buf())
}
