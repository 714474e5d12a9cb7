//! The `log` capability: guest log lines into the host's tracing output
//! (target `guest`), tagged with the module name and the event id, at most
//! [`MAX_LOG_LINES_PER_EVENT`] per event, each on one line.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{Capability, EventInfo, Grant};

/// Log lines one event may write; past it they are counted, and one line
/// says how many were suppressed.
pub const MAX_LOG_LINES_PER_EVENT: u32 = 100;

/// The severity of a guest's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warn`.
    Warn,
    /// `error`.
    Error,
}

/// The `log` capability (every module has it).
#[derive(Debug, Default)]
pub struct LogCapability;

/// One module's log: the name its lines carry.
#[derive(Debug)]
pub struct ModuleLog {
    module: Arc<str>,
}

/// One event's log: its id, and its line budget.
#[derive(Debug)]
pub struct EventLog {
    module: Arc<ModuleLog>,
    event: Arc<str>,
    lines: u32,
    suppressed: u32,
}

impl Capability for LogCapability {
    type Module = ModuleLog;
    type Event = EventLog;

    fn configure(&self, grant: &Grant<'_>) -> ModuleLog {
        ModuleLog {
            module: grant.name.clone(),
        }
    }

    fn prepare(module: &Arc<ModuleLog>, event: &EventInfo) -> EventLog {
        EventLog {
            module: module.clone(),
            event: event.id.clone(),
            lines: 0,
            suppressed: 0,
        }
    }
}

/// Longest message or field list kept from one guest log call; the rest is cut
/// so a guest cannot flood the log with one call.
const MAX_LOG_BYTES: usize = 8 << 10;

fn clip(s: &str) -> &str {
    if s.len() <= MAX_LOG_BYTES {
        return s;
    }
    let mut end = MAX_LOG_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl EventLog {
    /// Write one line, within the event's budget.
    pub fn log(&mut self, level: Level, message: &str, fields: &[(String, String)]) {
        // A budget per event: one event may not flood the log.
        self.lines += 1;
        if self.lines > MAX_LOG_LINES_PER_EVENT {
            self.suppressed += 1;
            return;
        }
        let (module, event) = (&*self.module.module, &*self.event);
        // The fields are formatted only for a line the filter lets through.
        macro_rules! emit {
            ($lvl:expr) => {
                if tracing::enabled!(target: "guest", $lvl) {
                    let fields = joined(fields);
                    tracing::event!(
                        target: "guest",
                        $lvl,
                        module,
                        event,
                        fields = clip(&fields),
                        "{}",
                        OneLine(clip(message))
                    )
                }
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info => emit!(tracing::Level::INFO),
            Level::Warn => emit!(tracing::Level::WARN),
            Level::Error => emit!(tracing::Level::ERROR),
        }
    }

    /// At the end of the event: say how many lines were over the budget.
    pub fn finish(&self) {
        if self.suppressed > 0 {
            tracing::warn!(
                target: "guest",
                module = &*self.module.module,
                event = &*self.event,
                "suppressed {} log lines past the limit of {} per event",
                self.suppressed,
                MAX_LOG_LINES_PER_EVENT
            );
        }
    }
}

/// A guest's message as it goes into the log: control characters (a line
/// break above all) written escaped, so that one call is one line and a
/// guest cannot forge a line that seems to come from the host or another
/// module. The fields need nothing of this: they are formatted quoted.
struct OneLine<'a>(&'a str);

impl std::fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(char::is_control) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("found at a char boundary");
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// `k="v" k2="v2"`, in one allocation.
fn joined(fields: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in fields {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{k}={v:?}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::OneLine;

    #[test]
    fn a_message_stays_on_one_line() {
        let forged =
            "done\n2026-12-06T00:00:00Z  INFO comet_host::registry: module ready\r\t\u{1b}[31m";
        let line = OneLine(forged).to_string();
        assert!(!line.contains(['\n', '\r', '\t', '\u{1b}']), "{line}");
        assert_eq!(
            line,
            "done\\n2026-12-06T00:00:00Z  INFO comet_host::registry: module ready\\r\\t\\u{1b}[31m"
        );
        assert_eq!(OneLine("héllo, wörld").to_string(), "héllo, wörld");
    }
}
