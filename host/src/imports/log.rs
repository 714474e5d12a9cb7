//! The `log` import: guest log lines into the host's tracing output, tagged
//! with the module name and the event id.

use std::fmt::Write as _;

use crate::bindings::log::{Host, Level};
use crate::imports::HostState;

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

impl Host for HostState {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        // A budget per event: one event may not flood the log.
        self.log_lines += 1;
        if self.log_lines > crate::imports::MAX_LOG_LINES_PER_EVENT {
            self.logs_suppressed += 1;
            return Ok(());
        }
        let (module, event) = (&*self.services.name, &*self.event_id);
        // The fields are formatted only for a line the filter lets through.
        macro_rules! emit {
            ($lvl:expr) => {
                if tracing::enabled!(target: "guest", $lvl) {
                    let fields = joined(&fields);
                    tracing::event!(
                        target: "guest",
                        $lvl,
                        module,
                        event,
                        fields = clip(&fields),
                        "{}",
                        OneLine(clip(&message))
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
        Ok(())
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
