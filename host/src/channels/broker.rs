//! The [`Broker`] boundary (history and positions of every channel) and the
//! embedded memory broker.
//!
//! The hub calls `append` with the channel's hub lock held, so the offset a
//! broker assigns and the order subscribers see are the same order. A Redis
//! broker (streams for history, pub/sub for other nodes' messages) implements
//! the same trait; the transports only ever talk to the hub.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cursor::Position;
use super::message::{Message, Payload};

/// Messages kept per channel by default. Enough for a client that drops off
/// for a few seconds of a busy channel to resume without a gap.
pub const DEFAULT_HISTORY_LEN: usize = 1000;
/// How long messages are kept by default.
pub const DEFAULT_HISTORY_AGE: Duration = Duration::from_secs(300);

/// How much history one channel keeps (set per namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most messages kept.
    pub max_len: usize,
    /// Oldest message kept.
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_len: DEFAULT_HISTORY_LEN,
            max_age: DEFAULT_HISTORY_AGE,
        }
    }
}

/// Why messages may be missing before what a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// The cursor is older than the oldest message kept.
    TooOld,
    /// The cursor is from another lifetime of the channel's history (for
    /// example before a restart of the memory broker).
    EpochChanged,
}

impl Gap {
    /// The reason as sent to clients.
    pub fn reason(self) -> &'static str {
        match self {
            Gap::TooOld => "cursor is older than the retained history",
            Gap::EpochChanged => "channel history was reset (new epoch)",
        }
    }
}

/// Messages read from history.
#[derive(Debug, Default)]
pub struct History {
    /// Messages after the cursor, oldest first.
    pub messages: Vec<Arc<Message>>,
    /// Set when messages before these may have been lost.
    pub gap: Option<Gap>,
    /// The channel's newest position (to continue from when nothing is read).
    pub head: Position,
}

/// Why a broker call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The backend is down or refused.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Where channel history and positions live.
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// Store a message and give it the next position.
    fn append(
        &self,
        channel: &Arc<str>,
        payload: Payload,
        limits: HistoryLimits,
    ) -> Result<Arc<Message>, BrokerError>;
    /// Up to `limit` messages after `since` (`None`: the oldest kept).
    fn read(
        &self,
        channel: &str,
        since: Option<Position>,
        limit: usize,
    ) -> Result<History, BrokerError>;
}

#[derive(Debug)]
struct ChannelHistory {
    epoch: u64,
    next_offset: u64,
    messages: VecDeque<Arc<Message>>,
    max_age: Duration,
}

impl ChannelHistory {
    fn prune(&mut self, now_ms: u64) {
        let max_age = u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX);
        while self
            .messages
            .front()
            .is_some_and(|m| now_ms.saturating_sub(m.published_at_ms) > max_age)
        {
            self.messages.pop_front();
        }
    }
}

/// The embedded broker: history in memory, a fresh random epoch per channel,
/// so cursors from before a restart get an explicit reset.
#[derive(Debug, Default)]
pub struct MemoryBroker {
    channels: Mutex<HashMap<Arc<str>, ChannelHistory>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn random_epoch() -> u64 {
    let mut b = [0u8; 8];
    // A failed getrandom leaves zeros; the time still makes epochs differ.
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b) ^ now_ms()
}

impl Broker for MemoryBroker {
    fn append(
        &self,
        channel: &Arc<str>,
        payload: Payload,
        limits: HistoryLimits,
    ) -> Result<Arc<Message>, BrokerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let history = channels
            .entry(channel.clone())
            .or_insert_with(|| ChannelHistory {
                epoch: random_epoch(),
                next_offset: 1,
                messages: VecDeque::new(),
                max_age: limits.max_age,
            });
        history.max_age = limits.max_age;
        let now = now_ms();
        let position = Position {
            epoch: history.epoch,
            offset: history.next_offset,
        };
        history.next_offset += 1;
        let message = Arc::new(Message::new(channel.clone(), position, payload, now));
        history.messages.push_back(message.clone());
        while history.messages.len() > limits.max_len.max(1) {
            history.messages.pop_front();
        }
        history.prune(now);
        Ok(message)
    }

    fn read(
        &self,
        channel: &str,
        since: Option<Position>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let Some(history) = channels.get_mut(channel) else {
            // Never published: nothing to read, and nothing was missed.
            return Ok(History {
                head: since.unwrap_or_default(),
                ..History::default()
            });
        };
        history.prune(now_ms());
        let head = Position {
            epoch: history.epoch,
            offset: history.next_offset - 1,
        };
        let oldest = history.messages.front().map(|m| m.position.offset);
        // After which offset to deliver, and whether a gap must be reported.
        let (after, gap) = match since {
            None => (0, None),
            Some(p) if p.epoch != history.epoch => {
                // A cursor that had seen nothing has lost nothing unless the
                // history no longer starts at the first message.
                let lost = p.offset > 0 || oldest.is_some_and(|o| o > 1);
                (0, lost.then_some(Gap::EpochChanged))
            }
            Some(p) if p.offset > head.offset => (0, Some(Gap::EpochChanged)),
            Some(p) => {
                let first_kept = oldest.unwrap_or(head.offset + 1);
                let gap = (p.offset + 1 < first_kept).then_some(Gap::TooOld);
                (p.offset, gap)
            }
        };
        let messages: Vec<_> = history
            .messages
            .iter()
            .filter(|m| m.position.offset > after)
            .take(limit)
            .cloned()
            .collect();
        Ok(History {
            messages,
            gap,
            head,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Payload {
        Payload::Text(s.into())
    }

    #[test]
    fn offsets_increase_and_reads_resume() {
        let b = MemoryBroker::default();
        let ch: Arc<str> = "a".into();
        let m1 = b.append(&ch, text("1"), HistoryLimits::default()).unwrap();
        let m2 = b.append(&ch, text("2"), HistoryLimits::default()).unwrap();
        assert!(m2.position.offset > m1.position.offset);
        assert_eq!(m1.position.epoch, m2.position.epoch);
        let h = b.read("a", Some(m1.position), 10).unwrap();
        assert_eq!(h.messages.len(), 1);
        assert_eq!(h.messages[0].payload, text("2"));
        assert_eq!(h.gap, None);
        assert_eq!(h.head, m2.position);
        let h = b.read("a", Some(m2.position), 10).unwrap();
        assert!(h.messages.is_empty());
    }

    #[test]
    fn old_and_foreign_cursors_get_a_gap() {
        let b = MemoryBroker::default();
        let ch: Arc<str> = "a".into();
        let limits = HistoryLimits {
            max_len: 3,
            ..HistoryLimits::default()
        };
        let first = b.append(&ch, text("0"), limits).unwrap();
        for i in 1..10 {
            b.append(&ch, text(&i.to_string()), limits).unwrap();
        }
        let h = b.read("a", Some(first.position), 100).unwrap();
        assert_eq!(h.gap, Some(Gap::TooOld));
        assert_eq!(h.messages.len(), 3);
        let foreign = Position {
            epoch: first.position.epoch ^ 1,
            offset: 5,
        };
        let h = b.read("a", Some(foreign), 100).unwrap();
        assert_eq!(h.gap, Some(Gap::EpochChanged));
        assert_eq!(h.messages.len(), 3);
    }

    #[test]
    fn a_cursor_that_saw_nothing_loses_nothing() {
        let b = MemoryBroker::default();
        let before = b.read("fresh", None, 10).unwrap().head;
        b.append(&"fresh".into(), text("x"), HistoryLimits::default())
            .unwrap();
        let h = b.read("fresh", Some(before), 10).unwrap();
        assert_eq!(h.gap, None);
        assert_eq!(h.messages.len(), 1);
    }
}
