//! What a guest built without WASI (`wasm32-unknown-unknown`, see the crate
//! docs) takes from the SDK instead: an allocator and a panic report.

use std::sync::Once;

/// std's allocator for this target grows linear memory on its first
/// allocation, leaving the heap in the module's initial memory unused. This
/// one (the same dlmalloc, newer) uses that heap first, so a short event
/// never grows memory, which is what costs the host most per event. It
/// does so only if its first request (rounded up to 64 KiB) fits that heap:
/// with more than about 64 KiB of static data, or a first allocation of
/// more than about 64 KiB, memory grows on every event again.
/// Default feature `allocator`; turn it off to declare another.
#[cfg(feature = "allocator")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// Called at the start of every exported event: installs, once per
/// instance, a panic hook that sends the panic's message to the host's log
/// (without WASI there is no stderr to print it on). The event then traps
/// as before. A panic before the handler is called (while the SDK reads the
/// event's arguments) traps without the message.
pub(crate) fn prepare() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let message = info
                .payload_as_str()
                .unwrap_or("(a panic without a message)");
            let place = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_default();
            crate::log::error(&format!("guest panicked: {message}"), &[("at", &place)]);
        }));
    });
}
