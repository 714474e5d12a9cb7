//! Deploying: the version each module name serves and the ones before it,
//! validate-then-swap, rollback and removal, and the uploads kept in the
//! data directory across restarts (`registry`).

mod registry;

pub use registry::{
    DEFAULT_KEEP_VERSIONS, DEFAULT_MAX_MODULE_BYTES, DeployError, ModuleInfo, ModuleSpec, Origin,
    Registry, RegistryConfig, VersionInfo, validate_name,
};
