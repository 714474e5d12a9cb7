//! A test double for the broker boundary: a broker that loses some messages
//! between storing and delivering them, as a network between a broker and a
//! node can. Used by this crate's tests and the integration tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::broker::{Broker, BrokerError, BrokerStats, History, HistoryLimits, Published, Sink};
use super::cursor::Position;
use super::message::{Message, Payload};
use super::name::ChannelName;

/// Which messages to lose.
pub type Lose = fn(&Message) -> bool;

/// `inner`, except that the messages `lose` picks never reach the node
/// (they are stored in history as usual).
#[derive(Debug)]
pub struct LossyBroker {
    inner: Arc<dyn Broker>,
    lose: Lose,
    lost: Arc<AtomicUsize>,
}

impl LossyBroker {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn Broker>, lose: Lose) -> LossyBroker {
        LossyBroker {
            inner,
            lose,
            lost: Arc::default(),
        }
    }

    /// Messages lost so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct LossySink {
    sink: Arc<dyn Sink>,
    lose: Lose,
    lost: Arc<AtomicUsize>,
}

impl Sink for LossySink {
    fn deliver(&self, message: Arc<Message>) {
        if (self.lose)(&message) {
            self.lost.fetch_add(1, Ordering::AcqRel);
        } else {
            self.sink.deliver(message);
        }
    }

    fn resubscribed(&self) {
        self.sink.resubscribed();
    }

    fn command(&self, command: &[u8]) {
        self.sink.command(command);
    }
}

#[async_trait]
impl Broker for LossyBroker {
    fn start(self: Arc<Self>, sink: Arc<dyn Sink>) {
        let sink = Arc::new(LossySink {
            sink,
            lose: self.lose,
            lost: self.lost.clone(),
        });
        self.inner.clone().start(sink);
    }

    async fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
        history: HistoryLimits,
    ) -> Result<Published, BrokerError> {
        self.inner.publish(channel, payload, history).await
    }

    async fn history(
        &self,
        channel: &ChannelName,
        since: Option<Position>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        self.inner.history(channel, since, limit).await
    }

    async fn newest(&self, channel: &ChannelName, limit: usize) -> Result<History, BrokerError> {
        self.inner.newest(channel, limit).await
    }

    async fn remove_history(&self, channel: &ChannelName) -> Result<Position, BrokerError> {
        self.inner.remove_history(channel).await
    }

    fn node_id(&self) -> &str {
        self.inner.node_id()
    }

    async fn send_command(&self, command: &[u8]) -> Result<(), BrokerError> {
        self.inner.send_command(command).await
    }

    async fn subscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        self.inner.subscribe(channel).await
    }

    async fn unsubscribe(&self, channel: &ChannelName) -> Result<(), BrokerError> {
        self.inner.unsubscribe(channel).await
    }

    fn stats(&self) -> BrokerStats {
        self.inner.stats()
    }
}
