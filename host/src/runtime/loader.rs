//! Loading a component: the preamble checked (not wasm, a core module, a
//! component), compiled (or read from the compile cache), its exports
//! checked against the `comet:edge` world, pre-linked against the host's
//! imports, and the events it defines read from its `comet-hooks` section.
//! [`LoadError`] says what is wrong and, where there is one, the usual fix.

use std::sync::Arc;

use wasmtime::component::Component;

use super::compile_cache::{Compiled, content_hash};
use super::implemented::Implemented;
use super::module::HandlerModule;
use super::wit::{HANDLER_INTERFACE, HANDLER_INTERFACES, HandlerExports};
use super::{ModuleEnv, Runtime};
use comet_config::limits::Limits;

/// Why a file could not be loaded as a handler. Each message says what is
/// wrong and, where there is one, the usual fix.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file: it does not start with the `\\0asm` magic bytes")]
    NotWasm,
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the handler for the \
         wasm32-wasip2 target (`cargo build --target wasm32-wasip2`), which emits a component, \
         or let `comet run DIR` build the crate (with `wasi = false` under \
         [package.metadata.comet], it makes the component of a wasm32-unknown-unknown build)"
    )]
    CoreModule,
    /// Looks like a component but does not validate or compile.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// A valid component built for some other world.
    #[error("this component is not a Comet handler: {0}")]
    WrongWorld(String),
    /// The component declares more memory than an instance slot holds.
    #[error("the component needs more memory than an instance may have ({max} bytes): {detail}")]
    MemoryOverSlot {
        /// The slot size.
        max: usize,
        /// wasmtime's account.
        detail: String,
    },
    /// The module asks for more memory than the engine's pool slots hold.
    #[error("memory limit of {asked} bytes is over the engine's maximum of {max} bytes")]
    MemoryOverEngineMax {
        /// Requested limit.
        asked: usize,
        /// The engine's slot size.
        max: usize,
    },
}

impl Runtime {
    /// Validate, compile and pre-link a handler component, as one version
    /// of the module whose environment is `env`, its events run under
    /// `limits`.
    pub fn load(
        &self,
        bytes: &[u8],
        env: Arc<ModuleEnv>,
        limits: Limits,
    ) -> Result<HandlerModule, LoadError> {
        if limits.memory_bytes > self.settings.max_memory_bytes {
            return Err(LoadError::MemoryOverEngineMax {
                asked: limits.memory_bytes,
                max: self.settings.max_memory_bytes,
            });
        }
        check_header(bytes)?;
        let hash = content_hash(bytes);
        let engine = &self.engine.engine;
        let (component, compiled) = match &self.cache {
            Some(cache) => cache.load(engine, bytes, &hash),
            None => Component::new(engine, bytes).map(|c| (c, Compiled::Compiled)),
        }
        .map_err(|e| {
            let detail = format!("{e:#}");
            // wasmtime has no error type for it; its message is stable
            // within the pinned version.
            if detail.contains("does not fit in pooling allocator requirements") {
                LoadError::MemoryOverSlot {
                    max: self.settings.max_memory_bytes,
                    detail,
                }
            } else {
                LoadError::Invalid(detail)
            }
        })?;
        check_exports(&component, &self.engine.engine)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let exports = HandlerExports::resolve(&pre).map_err(|e| {
            LoadError::WrongWorld(format!(
                "its `{HANDLER_INTERFACE}` export does not match this host's: {e:#}"
            ))
        })?;
        Ok(HandlerModule::new(
            pre,
            exports,
            Implemented::of_component(bytes),
            env,
            limits,
            hash,
            compiled,
            self,
        ))
    }
}

/// Tell "not wasm" and "core module" apart from real component errors by the
/// preamble: magic, then a version (1) and layer (0 core, 1 component).
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    if layer == 0 {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

fn check_exports(component: &Component, engine: &wasmtime::Engine) -> Result<(), LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if exports
        .iter()
        .any(|name| HANDLER_INTERFACES.contains(&name.as_str()))
    {
        return Ok(());
    }
    let listed = if exports.is_empty() {
        "nothing".to_string()
    } else {
        exports.join(", ")
    };
    Err(LoadError::WrongWorld(format!(
        "it does not export `{HANDLER_INTERFACE}` (it exports {listed}); \
         build it with comet-sdk and `#[comet_sdk::handler]`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_larger_than_a_slot_is_a_memory_limit() {
        let (runtime, capabilities) = Runtime::for_tests(super::super::EngineSettings {
            max_instances: 2,
            ..Default::default()
        });
        // 2000 pages: 125 MiB, over the 64 MiB slot.
        let bytes = wat::parse_str(
            "(component (core module $m (memory 2000)) (core instance (instantiate $m)))",
        )
        .unwrap();
        let granted = capabilities.configure("big".into(), &Default::default());
        let env = ModuleEnv::new(granted, &Limits::default());
        let e = runtime.load(&bytes, env, Limits::default()).unwrap_err();
        assert!(matches!(e, LoadError::MemoryOverSlot { .. }), "{e}");
    }

    #[test]
    fn header_check_tells_core_modules_and_junk_apart() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(check_header(b"\0asm"), Err(LoadError::NotWasm)));
        let core = [0, b'a', b's', b'm', 1, 0, 0, 0];
        assert!(matches!(check_header(&core), Err(LoadError::CoreModule)));
        let component = [0, b'a', b's', b'm', 0x0d, 0, 1, 0];
        assert!(check_header(&component).is_ok());
    }
}
