//! The compile cache: precompiled components on disk, keyed by content hash,
//! engine settings and wasmtime version, and verified before they are used.
//!
//! An entry is `SHA-256(artifact) ++ artifact`, written to a temporary file
//! and renamed into place, so a reader sees a whole entry or none. A
//! truncated, corrupt or mismatched entry is logged, ignored and replaced by a
//! fresh compile; it is never handed to wasmtime unverified.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const DIGEST_LEN: usize = 32;

/// Hex SHA-256 of `bytes`: the content hash the cache and the admin API use.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Read from the cache.
    CacheHit,
    /// Compiled now (and stored, if the cache is writable).
    Compiled,
}

/// A directory of precompiled components for one engine configuration.
#[derive(Debug)]
pub struct CompileCache {
    dir: PathBuf,
    /// The engine's compatibility hash (target, compiler flags, tunables,
    /// wasmtime version) and comet's version: an entry built by another
    /// version or with other settings has another name.
    engine_key: String,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CompileCache {
    /// A cache in `dir` (created if missing) for components of `engine`.
    pub fn open(dir: &Path, engine: &Engine) -> std::io::Result<CompileCache> {
        crate::private_fs::create_dir(dir)?;
        crate::private_fs::check_private(dir)?;
        let mut h = DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", h.finish()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Entries read from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Components compiled because no valid entry existed.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn entry_path(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}-{}.cwasm", self.engine_key))
    }

    /// The component for `bytes` (whose SHA-256 is `hash`): from the cache
    /// when a verified entry exists, else compiled and stored.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        hash: &str,
    ) -> wasmtime::Result<(Component, Compiled)> {
        let path = self.entry_path(hash);
        match read_entry(engine, &path) {
            Ok(Some(component)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((component, Compiled::CacheHit));
            }
            Ok(None) => {}
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "ignoring compile cache entry");
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write compile cache entry");
        }
        Ok((component, Compiled::Compiled))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let artifact = component.serialize()?;
        let mut entry = Vec::with_capacity(DIGEST_LEN + artifact.len());
        entry.extend_from_slice(&Sha256::digest(&artifact));
        entry.extend_from_slice(&artifact);
        let tmp = tempfile_in(&self.dir)?;
        crate::private_fs::write(&tmp, &entry)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// A unique temporary name in `dir` for an entry being written.
fn tempfile_in(dir: &Path) -> std::io::Result<PathBuf> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(std::io::Error::other)?;
    Ok(dir.join(format!(".tmp-{}", hex(&nonce))))
}

/// A verified entry, `None` if there is none, or why it was not used.
fn read_entry(engine: &Engine, path: &Path) -> Result<Option<Component>, String> {
    let entry = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let Some((digest, artifact)) = entry.split_at_checked(DIGEST_LEN) else {
        return Err("truncated".into());
    };
    if Sha256::digest(artifact).as_slice() != digest {
        return Err("checksum mismatch (corrupt entry)".into());
    }
    deserialize(engine, artifact)
        .map(Some)
        .map_err(|e| format!("{e:#}"))
}

/// Turn a verified artifact back into a component.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires the bytes to come from `Component::serialize`
    // of a compatible engine and not be tampered with. This artifact was
    // written by `CompileCache::store` and its SHA-256 matched the digest
    // stored with it, so it is the serialized output, byte for byte;
    // wasmtime itself rejects artifacts of another version or configuration.
    // The cache directory must be writable only by the user comet runs as
    // (like its binary), as anyone who can write it can choose the code run.
    unsafe { Component::deserialize(engine, artifact) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).unwrap()
    }

    const EMPTY: &str = "(component)";

    #[test]
    fn second_load_hits_and_corruption_recompiles() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let bytes = wat::parse_str(EMPTY).unwrap();
        let hash = content_hash(&bytes);
        let cache = CompileCache::open(dir.path(), &engine).unwrap();

        let (_, how) = cache.load(&engine, &bytes, &hash).unwrap();
        assert_eq!(how, Compiled::Compiled);
        let (_, how) = cache.load(&engine, &bytes, &hash).unwrap();
        assert_eq!(how, Compiled::CacheHit);

        // Flip one byte of the artifact: the checksum catches it.
        let path = cache.entry_path(&hash);
        let mut entry = std::fs::read(&path).unwrap();
        let last = entry.len() - 1;
        entry[last] ^= 0xff;
        std::fs::write(&path, &entry).unwrap();
        let (_, how) = cache.load(&engine, &bytes, &hash).unwrap();
        assert_eq!(how, Compiled::Compiled);

        // Truncated: also recompiled, and the entry is whole again after.
        std::fs::write(&path, b"short").unwrap();
        let (_, how) = cache.load(&engine, &bytes, &hash).unwrap();
        assert_eq!(how, Compiled::Compiled);
        let (_, how) = cache.load(&engine, &bytes, &hash).unwrap();
        assert_eq!(how, Compiled::CacheHit);
        assert_eq!((cache.hits(), cache.misses()), (2, 3));
    }

    #[test]
    fn content_hash_is_hex_sha256() {
        assert_eq!(
            content_hash(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
