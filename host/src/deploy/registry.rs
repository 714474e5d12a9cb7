//! Deployed modules by name: the version each name serves, the versions
//! before it (for rollback), atomic swaps, and the data directory that keeps
//! uploads across restarts.
//!
//! A swap replaces one `Arc` under a lock held for a pointer write: an event
//! holds the `Arc<HandlerModule>` it started with and finishes on it, new
//! events get the new version. A version is compiled, linked and
//! instantiated once before it is swapped in, so a broken upload never
//! replaces a working one.
//!
//! On disk: `DATA_DIR/modules/NAME/NNNNNNNN.wasm`, one file per uploaded
//! version; the highest number is the one served. Rollback deletes the newest
//! file, so the layout itself says what to serve after a restart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::capabilities::Capabilities;
use crate::hooks::{Hooks, Modules};
use crate::runtime::{
    Compiled, EventError, GuestFault, HandlerModule, LoadError, ModuleEnv, Runtime,
};
pub use comet_config::spec::ModuleSpec;
use comet_config::spec::{InvalidModuleName, validate_module_name};

/// Versions kept per module, the served one included.
pub const DEFAULT_KEEP_VERSIONS: usize = 5;

/// Largest module accepted by upload.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 64 << 20;

/// Where a version came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Read from a file (the command line, the manifest, `--watch`).
    File(PathBuf),
    /// Uploaded through the admin API (kept in the data directory).
    Upload,
}

impl Origin {
    fn label(&self) -> String {
        match self {
            Origin::File(path) => format!("file {}", path.display()),
            Origin::Upload => "upload".into(),
        }
    }
}

/// One version of a module, as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// Increasing per module name.
    pub version: u64,
    /// Hex SHA-256 of the component.
    pub hash: String,
    /// Component size in bytes.
    pub size: usize,
    /// When it was loaded (HTTP date).
    pub loaded_at: String,
    /// `upload` or `file PATH`.
    pub origin: String,
    /// Compile (or cache read) plus the first instantiation, in ms.
    pub load_ms: f64,
    /// True if the compiled code came from the compile cache.
    pub cached: bool,
    /// The events the guest runs itself (WIT names). The others are left to
    /// the SDK's defaults, which the host answers without an instance; a
    /// component built without `#[comet_sdk::handler]` lists all six.
    pub guest_events: Vec<&'static str>,
    /// Whether the module opts in to instance reuse
    /// (`#[comet_sdk::handler(reuse_instances)]`): then one instance serves
    /// up to its `events_per_instance` events, one at a time.
    pub reuses_instances: bool,
}

/// A module name with its served version and the ones it can roll back to.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleInfo {
    /// Module name.
    pub name: String,
    /// The version serving new events.
    pub current: VersionInfo,
    /// Earlier versions, newest first.
    pub previous: Vec<VersionInfo>,
}

/// Why a deploy, rollback or removal did not happen. The module's previous
/// state is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Not a usable module name.
    #[error(transparent)]
    InvalidName(#[from] InvalidModuleName),
    /// Over the size limit.
    #[error("the module is {size} bytes, over the {max} byte limit")]
    TooLarge {
        /// Size of the upload.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Refused by validation (not wasm, core module, wrong world...).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Compiled but could not be instantiated.
    #[error("the component compiled but does not start: {0}")]
    Start(EventError),
    /// No module of that name.
    #[error("no module named {0:?}")]
    NotFound(String),
    /// Nothing to roll back to.
    #[error("module {0:?} has no earlier version to roll back to")]
    NoPrevious(String),
    /// Removing it would leave routes or channels without a handler.
    #[error("module {name:?} is in use ({by}); point those at another module first")]
    InUse {
        /// The module.
        name: String,
        /// What uses it.
        by: String,
    },
    /// The data directory could not be written or read.
    #[error("data directory {path}: {source}")]
    Storage {
        /// File or directory concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Modules for Registry {
    fn current(&self, name: &str) -> Option<Arc<dyn Hooks>> {
        Registry::current(self, name).map(|module| module as Arc<dyn Hooks>)
    }
}

/// Check a module name: it becomes a directory and a URL segment.
pub fn validate_name(name: &str) -> Result<(), DeployError> {
    Ok(validate_module_name(name)?)
}

#[derive(Debug)]
struct Version {
    info: VersionInfo,
    bytes: Arc<[u8]>,
    origin: Origin,
}

#[derive(Debug)]
struct Slot {
    module: Arc<HandlerModule>,
    current: Version,
    /// Oldest first.
    previous: Vec<Version>,
    /// What the name keeps across versions (kv, budgets, event slots).
    env: Arc<ModuleEnv>,
}

/// Every deployed module of a host.
#[derive(Debug)]
pub struct Registry {
    runtime: Arc<Runtime>,
    /// What modules may be granted, configured per module name.
    capabilities: Capabilities,
    specs: BTreeMap<String, ModuleSpec>,
    data_dir: Option<PathBuf>,
    /// Names routes or channel hooks point at: never removed.
    in_use: BTreeMap<String, String>,
    keep_versions: usize,
    max_module_bytes: usize,
    slots: RwLock<BTreeMap<String, Slot>>,
    /// One deploy, rollback or removal at a time, so versions stay ordered.
    deploys: tokio::sync::Mutex<()>,
}

/// How a registry is set up.
#[derive(Debug)]
pub struct RegistryConfig {
    /// Per-name settings; names not listed get [`ModuleSpec::default`].
    pub specs: BTreeMap<String, ModuleSpec>,
    /// Where uploads are kept; `None` keeps them in memory only.
    pub data_dir: Option<PathBuf>,
    /// Module names that routes or channel hooks use, with a description
    /// of the use (shown when removal is refused).
    pub in_use: BTreeMap<String, String>,
    /// Largest module accepted, in bytes.
    pub max_module_bytes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            specs: BTreeMap::new(),
            data_dir: None,
            in_use: BTreeMap::new(),
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
        }
    }
}

impl Registry {
    /// An empty registry loading modules with `runtime`, granting them
    /// `capabilities` as their specs say.
    pub fn new(
        runtime: Runtime,
        capabilities: Capabilities,
        config: RegistryConfig,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            runtime: Arc::new(runtime),
            capabilities,
            specs: config.specs,
            data_dir: config.data_dir,
            in_use: config.in_use,
            keep_versions: DEFAULT_KEEP_VERSIONS,
            max_module_bytes: config.max_module_bytes,
            slots: RwLock::default(),
            deploys: tokio::sync::Mutex::new(()),
        })
    }

    /// The runtime modules are loaded with.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Largest module accepted, in bytes.
    pub fn max_module_bytes(&self) -> usize {
        self.max_module_bytes
    }

    /// The version of `name` new events should run, if deployed.
    pub fn current(&self, name: &str) -> Option<Arc<HandlerModule>> {
        self.read().get(name).map(|slot| slot.module.clone())
    }

    /// Every module, by name.
    pub fn list(&self) -> Vec<ModuleInfo> {
        self.read()
            .iter()
            .map(|(name, slot)| slot.info(name))
            .collect()
    }

    /// One module.
    pub fn get(&self, name: &str) -> Option<ModuleInfo> {
        self.read().get(name).map(|slot| slot.info(name))
    }

    /// Names with a version on disk in the data directory.
    pub fn stored_names(&self) -> Vec<String> {
        let Some(dir) = self.modules_dir() else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_name(n).is_ok())
            .filter(|n| !stored_versions(&self.module_dir(n).unwrap_or_default()).is_empty())
            .collect();
        names.sort();
        names
    }

    /// Validate, compile and instantiate `bytes` as the next version of
    /// `name`, then swap it in. Uploads are written to the data directory
    /// before the swap.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Vec<u8>,
        origin: Origin,
    ) -> Result<VersionInfo, DeployError> {
        validate_name(name)?;
        if bytes.len() > self.max_module_bytes {
            return Err(DeployError::TooLarge {
                size: bytes.len(),
                max: self.max_module_bytes,
            });
        }
        let _one_at_a_time = self.deploys.lock().await;
        let number = self.next_version(name);
        let bytes: Arc<[u8]> = bytes.into();
        let (module, info) = self.prepare(name, number, bytes.clone(), &origin).await?;
        if origin == Origin::Upload {
            self.store(name, number, &bytes)?;
        }
        let version = Version {
            info: info.clone(),
            bytes,
            origin,
        };
        self.swap_in(name, module, version);
        Ok(info)
    }

    /// Serve the version before the current one again; the current one is
    /// forgotten (and deleted from the data directory).
    pub async fn rollback(&self, name: &str) -> Result<VersionInfo, DeployError> {
        let _one_at_a_time = self.deploys.lock().await;
        let (previous, env) = {
            let slots = self.read();
            let slot = slots
                .get(name)
                .ok_or_else(|| DeployError::NotFound(name.into()))?;
            let previous = slot
                .previous
                .last()
                .ok_or_else(|| DeployError::NoPrevious(name.into()))?;
            (
                (
                    previous.info.version,
                    previous.bytes.clone(),
                    previous.origin.clone(),
                ),
                slot.env.clone(),
            )
        };
        let (number, bytes, origin) = previous;
        let (module, info) = self.load_version(name, number, bytes, &origin, env).await?;
        let retired = {
            let mut slots = self.write();
            let slot = slots
                .get_mut(name)
                .ok_or_else(|| DeployError::NotFound(name.into()))?;
            let mut restored = slot.previous.pop().expect("checked above under the lock");
            restored.info = info.clone();
            slot.module = module;
            std::mem::replace(&mut slot.current, restored)
        };
        if retired.origin == Origin::Upload {
            self.delete_stored(name, retired.info.version);
        }
        tracing::info!(module = name, version = number, "rolled back");
        Ok(info)
    }

    /// Stop serving `name` and delete its stored versions.
    pub async fn remove(&self, name: &str) -> Result<(), DeployError> {
        if let Some(by) = self.in_use.get(name) {
            return Err(DeployError::InUse {
                name: name.into(),
                by: by.clone(),
            });
        }
        let _one_at_a_time = self.deploys.lock().await;
        let Some(slot) = self.write().remove(name) else {
            return Err(DeployError::NotFound(name.into()));
        };
        slot.module.retire();
        if let Some(dir) = self.module_dir(name)
            && let Err(source) = std::fs::remove_dir_all(&dir)
            && source.kind() != std::io::ErrorKind::NotFound
        {
            return Err(DeployError::Storage { path: dir, source });
        }
        tracing::info!(module = name, "removed");
        Ok(())
    }

    /// Load the stored versions of `name`: the newest is served, the others
    /// are kept for rollback. `Ok(None)` if nothing is stored.
    pub async fn restore(&self, name: &str) -> Result<Option<VersionInfo>, DeployError> {
        let Some(dir) = self.module_dir(name) else {
            return Ok(None);
        };
        let numbers = stored_versions(&dir);
        let Some((&newest, older)) = numbers.split_last() else {
            return Ok(None);
        };
        let read = |n: u64| {
            let path = version_path(&dir, n);
            std::fs::read(&path)
                .map(Arc::<[u8]>::from)
                .map_err(|source| DeployError::Storage { path, source })
        };
        let _one_at_a_time = self.deploys.lock().await;
        let newest_bytes = read(newest)?;
        let (module, info) = self
            .prepare(name, newest, newest_bytes.clone(), &Origin::Upload)
            .await?;
        let mut previous = Vec::new();
        for &n in older {
            let bytes = read(n)?;
            let (guest_events, reuses_instances) = crate::runtime::declared_events(&bytes);
            previous.push(Version {
                info: VersionInfo {
                    version: n,
                    hash: crate::runtime::content_hash(&bytes),
                    size: bytes.len(),
                    loaded_at: String::new(),
                    origin: Origin::Upload.label(),
                    load_ms: 0.0,
                    cached: false,
                    guest_events,
                    reuses_instances,
                },
                bytes,
                origin: Origin::Upload,
            });
        }
        let current = Version {
            info: info.clone(),
            bytes: newest_bytes,
            origin: Origin::Upload,
        };
        let env = module.env().clone();
        self.write().insert(
            name.to_string(),
            Slot {
                module,
                current,
                previous,
                env,
            },
        );
        Ok(Some(info))
    }

    fn next_version(&self, name: &str) -> u64 {
        let in_memory = self.read().get(name).map_or(0, |s| s.current.info.version);
        let on_disk = self
            .module_dir(name)
            .and_then(|d| stored_versions(&d).last().copied())
            .unwrap_or(0);
        in_memory.max(on_disk) + 1
    }

    /// Compile, link and instantiate once, in the name's environment (so kv
    /// data and budgets carry over) or a new one.
    async fn prepare(
        &self,
        name: &str,
        number: u64,
        bytes: Arc<[u8]>,
        origin: &Origin,
    ) -> Result<(Arc<HandlerModule>, VersionInfo), DeployError> {
        let env = self
            .read()
            .get(name)
            .map(|s| s.env.clone())
            .unwrap_or_else(|| {
                let spec = self.spec(name);
                ModuleEnv::new(
                    self.capabilities.configure(name.into(), &spec),
                    &spec.limits,
                )
            });
        self.load_version(name, number, bytes, origin, env).await
    }

    async fn load_version(
        &self,
        name: &str,
        number: u64,
        bytes: Arc<[u8]>,
        origin: &Origin,
        env: Arc<ModuleEnv>,
    ) -> Result<(Arc<HandlerModule>, VersionInfo), DeployError> {
        let started = Instant::now();
        let limits = self.spec(name).limits;
        let runtime = self.runtime.clone();
        let size = bytes.len();
        // Compiling takes milliseconds to seconds: keep it off the workers
        // that serve connections.
        let module = tokio::task::spawn_blocking(move || runtime.load(&bytes, env, limits))
            .await
            .map_err(|e| {
                DeployError::Start(EventError::Fault(GuestFault::Instantiate(e.to_string())))
            })??;
        let module = Arc::new(module);
        module.check_starts().await.map_err(DeployError::Start)?;
        let info = VersionInfo {
            version: number,
            hash: module.content_hash().to_string(),
            size,
            loaded_at: httpdate::fmt_http_date(SystemTime::now()),
            origin: origin.label(),
            load_ms: started.elapsed().as_secs_f64() * 1000.0,
            cached: module.compiled() == Compiled::CacheHit,
            guest_events: module.implemented_events(),
            reuses_instances: module.reuses_instances(),
        };
        tracing::info!(
            module = name,
            version = number,
            hash = &info.hash[..12],
            cached = info.cached,
            load_ms = format_args!("{:.1}", info.load_ms),
            "module ready"
        );
        Ok((module, info))
    }

    fn swap_in(&self, name: &str, module: Arc<HandlerModule>, version: Version) {
        let mut slots = self.write();
        match slots.get_mut(name) {
            Some(slot) => {
                std::mem::replace(&mut slot.module, module).retire();
                let old = std::mem::replace(&mut slot.current, version);
                slot.previous.push(old);
                let excess = (slot.previous.len() + 1).saturating_sub(self.keep_versions);
                let dropped: Vec<Version> = slot.previous.drain(..excess).collect();
                drop(slots);
                for v in dropped {
                    if v.origin == Origin::Upload {
                        self.delete_stored(name, v.info.version);
                    }
                }
            }
            None => {
                let env = module.env().clone();
                slots.insert(
                    name.to_string(),
                    Slot {
                        module,
                        current: version,
                        previous: Vec::new(),
                        env,
                    },
                );
            }
        }
    }

    fn spec(&self, name: &str) -> ModuleSpec {
        self.specs.get(name).cloned().unwrap_or_default()
    }

    fn modules_dir(&self) -> Option<PathBuf> {
        self.data_dir.as_ref().map(|d| d.join("modules"))
    }

    fn module_dir(&self, name: &str) -> Option<PathBuf> {
        self.modules_dir().map(|d| d.join(name))
    }

    fn store(&self, name: &str, number: u64, bytes: &[u8]) -> Result<(), DeployError> {
        let Some(dir) = self.module_dir(name) else {
            return Ok(());
        };
        let storage = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DeployError::Storage { path, source }
        };
        crate::private_fs::create_dir(&dir).map_err(storage(&dir))?;
        let tmp = dir.join(format!(".upload-{number}"));
        crate::private_fs::write(&tmp, bytes).map_err(storage(&tmp))?;
        let path = version_path(&dir, number);
        std::fs::rename(&tmp, &path).map_err(storage(&path))?;
        Ok(())
    }

    fn delete_stored(&self, name: &str, number: u64) {
        if let Some(dir) = self.module_dir(name) {
            let path = version_path(&dir, number);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete old version");
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Slot>> {
        self.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Slot>> {
        self.slots.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Names of modules in use by routes or hooks.
    pub fn in_use(&self) -> BTreeSet<&str> {
        self.in_use.keys().map(String::as_str).collect()
    }
}

impl Slot {
    fn info(&self, name: &str) -> ModuleInfo {
        ModuleInfo {
            name: name.to_string(),
            current: self.current.info.clone(),
            previous: self.previous.iter().rev().map(|v| v.info.clone()).collect(),
        }
    }
}

fn version_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}.wasm"))
}

/// Version numbers stored in `dir`, ascending.
fn stored_versions(dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut numbers: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".wasm")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_versions_are_sorted_numbers() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "00000002.wasm",
            "00000010.wasm",
            "00000001.wasm",
            ".upload-3",
            "x.wasm",
        ] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        assert_eq!(stored_versions(dir.path()), vec![1, 2, 10]);
    }

    /// A version that a deploy replaced is dropped once its events are
    /// done, even with instances it kept for reuse: nothing a kept instance
    /// holds leads back to its module.
    #[tokio::test]
    async fn a_retired_version_is_dropped_while_instance_reuse_is_on() {
        use crate::hooks::{Hooks, Request, RequestOutcome};
        let (runtime, capabilities) = Runtime::for_tests(Default::default());
        let registry = Registry::new(runtime, capabilities, RegistryConfig::default());
        let bytes = std::fs::read(comet_testkit::guests::REUSE_APP).unwrap();
        let origin = Origin::File("reuse.wasm".into());
        registry
            .deploy("reuse", bytes.clone(), origin.clone())
            .await
            .unwrap();
        let first = registry.current("reuse").unwrap();
        assert!(first.reuses_instances());
        for n in 0..3 {
            let request = Request {
                id: format!("r{n}"),
                method: "GET".into(),
                path: "/ok".into(),
                query: String::new(),
                headers: Vec::new(),
                body: Vec::new(),
                remote_addr: "127.0.0.1:9".into(),
            };
            let outcome = first.on_request(request.id.as_str().into(), request).await;
            assert!(matches!(outcome, Ok(RequestOutcome::Respond(r)) if r.status == 200));
        }
        assert_eq!(first.idle_instances(), 1, "the instance was kept for reuse");
        let weak = Arc::downgrade(&first);
        drop(first);
        registry.deploy("reuse", bytes, origin).await.unwrap();
        assert!(
            weak.upgrade().is_none(),
            "the replaced version is still alive"
        );
        assert_eq!(registry.get("reuse").unwrap().current.version, 2);
    }
}
