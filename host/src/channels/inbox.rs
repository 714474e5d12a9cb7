//! What the hub and a connection's task share: the connection's bounded
//! queue, its position in each channel it is subscribed to, and, for a
//! transport that lets the hub write its socket, that socket's [`Outlet`].
//!
//! Strategy: one lock per connection covers the queue and the positions, so
//! the check that makes delivery exactly once and in order (a message is
//! handed out only if it carries the next offset of its channel) is made in
//! one place whoever hands it out:
//! - **The task** pops messages and checks them under the lock, then writes
//!   them. While it holds any, it is busy, and everything the hub delivers
//!   waits in the queue behind them.
//! - **The hub's drain**: a task waiting for its next message with nothing
//!   in hand and nothing queued is *idle*. If it has an outlet, the hub
//!   does not wake it: it queues the message and has a drain (a tokio task
//!   serving many connections) pop, check and write it to the outlet, under
//!   the same lock. Anything that is not simply the next message (a jump,
//!   another epoch, a channel being subscribed) stops the drain and wakes the
//!   task, which decides as before.
//!
//! Order follows: a message is written only after every message queued
//! before it, by whoever holds the lock; the task clears *idle* (under the
//! lock) before it hands anything else to its transport (a subscription's
//! backlog, a catch-up), so no drain writes past it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::control::Action;
use super::cursor::Position;
use super::lock;
use super::message::Message;
use super::name::ChannelName;
use super::signal::Signal;

/// A connection's socket as the hub's drain writes it: a transport that
/// owns its socket implements it (the WebSocket session), and the drain
/// writes live messages straight to it, without waking the connection's
/// task.
pub trait Outlet: Send + Sync + std::fmt::Debug {
    /// Write `message` without waiting: at once, or behind what is already
    /// waiting to go out. [`OutletFull`] when too much is waiting: the
    /// connection is dropped as a slow consumer.
    fn write(&self, message: &Message) -> Result<(), OutletFull>;
}

/// Session attributes of a connection (seen by presence and by every
/// later event of the connection).
pub type Session = Vec<(String, String)>;

/// An [`Outlet`] holds as much unwritten data as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutletFull;

/// What the hub keeps of a connection (see the module docs).
#[derive(Debug)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    /// Most messages queued.
    capacity: usize,
    /// Fired when the connection fell behind (its queue or outlet full).
    pub(crate) kick: Signal,
    /// Session attributes (seen by presence).
    pub(crate) session: Mutex<Session>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Arc<Message>>,
    positions: Positions,
    /// The task waits with nothing in hand and nothing queued.
    idle: bool,
    /// A drain of this inbox is on its way.
    draining: bool,
    /// The task's waker, while it waits for the queue.
    waker: Option<Waker>,
    outlet: Option<Arc<dyn Outlet>>,
    /// Commands for the task, from the server API (see `control`).
    commands: VecDeque<Action>,
}

/// Most commands waiting for one connection's task; more are dropped (a
/// task takes them before any message, so only a flood fills this).
const MAX_COMMANDS: usize = 64;

/// What the hub should do after [`Inbox::push`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued; the task was woken (or will find it).
    Queued,
    /// Queued for a drain to write: the hub schedules one.
    Drain,
    /// The queue is full: the connection is a slow consumer.
    Full,
}

/// A message taken from the queue by the task.
#[derive(Debug)]
pub(crate) enum Popped {
    /// The next message of its channel: hand it out.
    Next(Arc<Message>),
    /// Messages of this channel were lost before the one taken: catch up.
    Jump(ChannelName),
    /// A command for the task (taken before any message).
    Command(Action),
    /// The connection was dropped as a slow consumer.
    Kicked,
}

/// Most messages a drain writes under one hold of an inbox's lock (the hub
/// waits for that lock to queue more).
const DRAIN_BATCH: usize = 32;

/// How far one hold of the lock got with a drain.
enum Drained {
    /// Nothing left for it (or the task took over).
    All,
    /// A batch written, more queued.
    Some,
    /// The outlet is full: a slow consumer.
    Full,
}

/// How a message relates to the connection's position in its channel.
enum Check {
    Next,
    /// Handed out already (or not subscribed any more): drop it.
    Old,
    /// A jump or another epoch.
    Jump,
}

/// Subscribed channels and the position of the last message handed out of
/// each (a list: most connections have one or two channels, and an idle
/// connection should stay small).
#[derive(Debug, Default)]
struct Positions(Vec<(ChannelName, Position)>);

impl Positions {
    fn check(&self, message: &Message) -> Check {
        let Some((_, have)) = self.0.iter().find(|(c, _)| *c == message.channel) else {
            // Unsubscribed since it was queued (subscribing sets the
            // position before the task takes anything of the channel).
            return Check::Old;
        };
        let got = message.position;
        if got.epoch == have.epoch {
            if got.offset <= have.offset {
                return Check::Old;
            }
            if got.offset == have.offset + 1 {
                return Check::Next;
            }
        }
        Check::Jump
    }

    fn set(&mut self, channel: &ChannelName, position: Position) {
        match self.0.iter_mut().find(|(c, _)| c == channel) {
            Some((_, p)) => *p = position,
            None => self.0.push((channel.clone(), position)),
        }
    }
}

impl State {
    /// Give back a queue's memory once it is empty again (a burst may have
    /// grown it; an idle connection should stay small).
    fn shrink(&mut self) {
        if self.queue.capacity() > 64 {
            self.queue = VecDeque::new();
        }
    }
}

impl Inbox {
    pub(crate) fn new(capacity: usize) -> Inbox {
        Inbox {
            state: Mutex::default(),
            capacity,
            kick: Signal::default(),
            session: Mutex::default(),
        }
    }

    /// Drop the connection as a slow consumer: fire its signal and wake its
    /// task, which may be idle (the drains do not wake it). True the first
    /// time.
    pub(crate) fn kick_out(&self) -> bool {
        let first = self.kick.fire();
        let waker = lock(&self.state).waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
        first
    }

    /// Queue `action` for the task and wake it (drains stop until it
    /// waits again). False when too many are waiting.
    pub(crate) fn command(&self, action: Action) -> bool {
        let mut state = lock(&self.state);
        if state.commands.len() >= MAX_COMMANDS {
            return false;
        }
        state.commands.push_back(action);
        state.idle = false;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Queue `message` (the hub, under its shard lock).
    pub(crate) fn push(&self, message: &Arc<Message>) -> Pushed {
        let mut state = lock(&self.state);
        if state.queue.len() >= self.capacity {
            return Pushed::Full;
        }
        state.queue.push_back(message.clone());
        if state.idle && state.outlet.is_some() {
            if state.draining {
                return Pushed::Queued;
            }
            state.draining = true;
            return Pushed::Drain;
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Pushed::Queued
    }

    /// Write what is queued to the outlet, while the task is idle (a drain
    /// the hub scheduled). False if the outlet was full: the connection is
    /// a slow consumer.
    pub(crate) fn drain(&self) -> bool {
        lock(&self.state).draining = false;
        loop {
            match self.drain_some() {
                Drained::All => return true,
                Drained::Full => return false,
                // Let the hub in between (it waits for this lock to queue).
                Drained::Some => continue,
            }
        }
    }

    /// Up to [`DRAIN_BATCH`] messages of a [`Inbox::drain`], under one
    /// hold of the lock.
    fn drain_some(&self) -> Drained {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let outlet = match &state.outlet {
            Some(outlet) if state.idle && !self.kick.is_set() => outlet,
            // The task took over (or is going away).
            _ => return Drained::All,
        };
        for _ in 0..DRAIN_BATCH {
            let Some(message) = state.queue.pop_front() else {
                break;
            };
            match state.positions.check(&message) {
                Check::Next => {
                    state.positions.set(&message.channel, message.position);
                    if outlet.write(&message).is_err() {
                        return Drained::Full;
                    }
                }
                Check::Old => {}
                Check::Jump => {
                    // The task catches up from history.
                    state.queue.push_front(message);
                    state.idle = false;
                    let waker = state.waker.take();
                    drop(guard);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                    return Drained::All;
                }
            }
        }
        if !state.queue.is_empty() {
            return Drained::Some;
        }
        state.shrink();
        Drained::All
    }

    /// The task's wait for its next message. `behind` names channels being
    /// caught up from history, whose queued messages the read will include.
    /// Pending with nothing queued: the task is idle from then on.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>, behind: &[ChannelName]) -> Poll<Popped> {
        if self.kick.is_set() {
            return Poll::Ready(Popped::Kicked);
        }
        let mut state = lock(&self.state);
        match self.pop(&mut state, behind) {
            Some(popped) => Poll::Ready(popped),
            None => {
                state.idle = true;
                state.shrink();
                match &mut state.waker {
                    Some(waker) => waker.clone_from(cx.waker()),
                    waker @ None => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// The next message if one is queued (the task, batching a burst).
    pub(crate) fn try_pop(&self, behind: &[ChannelName]) -> Option<Popped> {
        self.pop(&mut lock(&self.state), behind)
    }

    fn pop(&self, state: &mut State, behind: &[ChannelName]) -> Option<Popped> {
        if let Some(action) = state.commands.pop_front() {
            state.idle = false;
            return Some(Popped::Command(action));
        }
        while let Some(message) = state.queue.pop_front() {
            state.idle = false;
            if behind.contains(&message.channel) {
                continue;
            }
            match state.positions.check(&message) {
                Check::Next => {
                    state.positions.set(&message.channel, message.position);
                    return Some(Popped::Next(message));
                }
                Check::Old => {}
                Check::Jump => {
                    tracing::debug!(channel = %message.channel, got = ?message.position, "offset jump: catching up from history");
                    return Some(Popped::Jump(message.channel.clone()));
                }
            }
        }
        None
    }

    /// The task is about to hand its transport something of its own (a
    /// backlog): no drain writes until it waits again.
    pub(crate) fn busy(&self) {
        lock(&self.state).idle = false;
    }

    /// Let drains write to `outlet` (or stop them, with `None`).
    pub(crate) fn set_outlet(&self, outlet: Option<Arc<dyn Outlet>>) {
        lock(&self.state).outlet = outlet;
    }

    pub(crate) fn position(&self, channel: &str) -> Option<Position> {
        lock(&self.state)
            .positions
            .0
            .iter()
            .find(|(c, _)| c.as_str() == channel)
            .map(|(_, p)| *p)
    }

    pub(crate) fn set_position(&self, channel: &ChannelName, position: Position) {
        lock(&self.state).positions.set(channel, position);
    }

    /// Forget `channel`; false if it was not subscribed.
    pub(crate) fn remove(&self, channel: &str) -> Option<ChannelName> {
        let positions = &mut lock(&self.state).positions.0;
        let at = positions.iter().position(|(c, _)| c.as_str() == channel)?;
        Some(positions.swap_remove(at).0)
    }

    /// Forget every channel, returning them.
    pub(crate) fn take_positions(&self) -> Vec<(ChannelName, Position)> {
        std::mem::take(&mut lock(&self.state).positions.0)
    }

    /// Every channel and its position.
    pub(crate) fn positions(&self) -> Vec<(ChannelName, Position)> {
        lock(&self.state).positions.0.clone()
    }

    pub(crate) fn channel_count(&self) -> usize {
        lock(&self.state).positions.0.len()
    }
}
