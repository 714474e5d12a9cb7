//! Which events a component implements itself, from its `comet-hooks`
//! custom section (written by the SDK's `#[comet_sdk::handler]`).
//!
//! The section lists, one per line, the WIT names of the events the
//! handler's impl defines. An event it does not list is left to the SDK's
//! default, whose answer is fixed (accept, allow, no actions, nothing, 404),
//! so the host gives that answer without starting an instance. A component
//! without the section (built with `export_handler!`, or not with the SDK)
//! runs every event in the guest.
//!
//! The line `reuse-instances` (from `#[comet_sdk::handler(reuse_instances)]`)
//! says the module opts in to instance reuse: its events may share an
//! instance, one at a time (see `HandlerModule`'s idle instances).

use crate::hooks::Hook;

/// The bit of `hook` in [`Implemented`].
fn bit(hook: Hook) -> u8 {
    1 << hook as u8
}

/// The name of the custom section.
pub(crate) const SECTION: &str = "comet-hooks";

/// The line by which a module opts in to instance reuse.
const REUSE_LINE: &str = "reuse-instances";

/// The bit of [`REUSE_LINE`], above the hooks' bits.
const REUSE_BIT: u8 = 1 << Hook::ALL.len();

/// The events a component runs in the guest, and whether it opts in to
/// instance reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Implemented {
    bits: u8,
}

impl Implemented {
    /// Every event runs in the guest, each in a fresh instance.
    pub(crate) const ALL: Implemented = Implemented { bits: 0b11_1111 };

    /// Read the section of a component (already validated by wasmtime). No
    /// section: every event. Several sections (one per core module or per
    /// attribute) add up; names this host does not know are ignored.
    pub(crate) fn of_component(bytes: &[u8]) -> Implemented {
        let mut found = None;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            let Ok(payload) = payload else {
                return Implemented::ALL;
            };
            if let wasmparser::Payload::CustomSection(section) = payload
                && section.name() == SECTION
            {
                let bits = found.get_or_insert(0);
                *bits |= Implemented::from_section(section.data()).bits;
            }
        }
        found.map_or(Implemented::ALL, |bits| Implemented { bits })
    }

    fn from_section(data: &[u8]) -> Implemented {
        let text = String::from_utf8_lossy(data);
        let bits = text
            .lines()
            .map(str::trim)
            .filter_map(|line| {
                if line == REUSE_LINE {
                    return Some(REUSE_BIT);
                }
                Hook::ALL
                    .into_iter()
                    .find(|h| h.wit_name() == line)
                    .map(bit)
            })
            .fold(0, |bits, bit| bits | bit);
        Implemented { bits }
    }

    /// Whether `hook` runs in the guest.
    pub(crate) fn runs(self, hook: Hook) -> bool {
        self.bits & bit(hook) != 0
    }

    /// Whether the module opts in to instance reuse.
    pub(crate) fn reuses_instances(self) -> bool {
        self.bits & REUSE_BIT != 0
    }

    /// The WIT names of the events that run in the guest.
    pub(crate) fn names(self) -> Vec<&'static str> {
        Hook::ALL
            .into_iter()
            .filter(|h| self.runs(*h))
            .map(Hook::wit_name)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_lists_what_runs_and_ignores_what_it_does_not_know() {
        let some = Implemented::from_section(b"on-subscribe\non-close\non-nothing\n");
        assert_eq!(some.names(), ["on-subscribe", "on-close"]);
        assert!(!some.runs(Hook::Connect));
        assert!(!some.reuses_instances());
        let reuse = Implemented::from_section(b"reuse-instances\non-request\n");
        assert_eq!(reuse.names(), ["on-request"]);
        assert!(reuse.reuses_instances());
        assert!(!Implemented::ALL.reuses_instances());
        assert_eq!(Implemented::from_section(b"").names(), Vec::<&str>::new());
    }

    #[test]
    fn no_section_or_an_unreadable_component_runs_everything() {
        let component = wat::parse_str("(component)").unwrap();
        assert_eq!(Implemented::of_component(&component), Implemented::ALL);
        assert_eq!(Implemented::of_component(b"junk"), Implemented::ALL);
    }

    #[test]
    fn sections_of_nested_modules_are_found_and_add_up() {
        let component = wat::parse_str(
            r#"(component
                (core module (@custom "comet-hooks" "on-connect\n"))
                (core module (@custom "comet-hooks" "on-close\n")))"#,
        )
        .unwrap();
        let found = Implemented::of_component(&component);
        assert_eq!(found.names(), ["on-connect", "on-close"]);
    }
}
