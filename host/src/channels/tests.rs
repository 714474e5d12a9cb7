//! The channel layer end to end in one process: node, memory broker, hub and
//! connections, including a broker that loses messages on the way.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use super::testing::LossyBroker;
use super::*;

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).unwrap()
}

fn text(m: &Message) -> String {
    match m.payload() {
        Payload::Text(t) => t,
        Payload::Binary(_) => String::new(),
    }
}

fn node_over(broker: Arc<dyn Broker>) -> Arc<Node> {
    Node::new(broker, NodeConfig::default(), Arc::default())
}

/// A memory broker that counts the node's subscribes and unsubscribes
/// (taking a turn of the runtime in each subscribe) and, if told, never
/// answers history reads.
#[derive(Debug, Default)]
struct Counting {
    inner: MemoryBroker,
    subscribes: AtomicUsize,
    unsubscribes: AtomicUsize,
    stall_history: bool,
}

impl Counting {
    /// Wait (a bounded number of turns) for `n` unsubscribes, which the
    /// node makes in the background.
    async fn unsubscribed(&self, n: usize) {
        for _ in 0..100 {
            if self.unsubscribes.load(Ordering::Acquire) == n {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(self.unsubscribes.load(Ordering::Acquire), n);
    }
}

#[async_trait]
impl Broker for Counting {
    fn start(self: Arc<Self>, _sink: Arc<dyn Sink>) {}
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
        if self.stall_history {
            std::future::pending::<()>().await;
        }
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
    async fn subscribe(&self, _: &ChannelName) -> Result<(), BrokerError> {
        tokio::task::yield_now().await;
        self.subscribes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
    async fn unsubscribe(&self, _: &ChannelName) -> Result<(), BrokerError> {
        self.unsubscribes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

fn node() -> Arc<Node> {
    node_over(Arc::new(MemoryBroker::default()))
}

async fn publish(node: &Node, channel: &str, s: &str) -> Published {
    node.publish(&name(channel), Payload::Text(s.into()))
        .await
        .unwrap()
}

/// The texts of the next `n` events, which must be messages.
async fn next_texts(c: &mut Connection, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..n {
        match c.next().await {
            Event::Message(m) => got.push(text(&m)),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    got
}

#[tokio::test]
async fn subscribers_get_messages_in_order() {
    let node = node();
    let mut a = node.connect(TransportKind::Sse).unwrap();
    let mut b = node.connect(TransportKind::Sse).unwrap();
    a.subscribe(&name("x"), None).await.unwrap();
    b.subscribe(&name("x"), None).await.unwrap();
    b.subscribe(&name("y"), None).await.unwrap();
    for i in 0..5 {
        publish(&node, "x", &i.to_string()).await;
    }
    publish(&node, "y", "why").await;
    assert_eq!(next_texts(&mut a, 5).await, ["0", "1", "2", "3", "4"]);
    assert_eq!(
        next_texts(&mut b, 6).await,
        ["0", "1", "2", "3", "4", "why"]
    );
    assert!(a.try_next().is_none());
}

#[tokio::test]
async fn resume_gets_the_backlog_then_live_messages_once() {
    let node = node();
    let first = publish(&node, "x", "1").await;
    publish(&node, "x", "2").await;
    let mut c = node.connect(TransportKind::Sse).unwrap();
    let backlog = c.subscribe(&name("x"), Some(first.position)).await.unwrap();
    assert_eq!(backlog.reset, None);
    assert_eq!(backlog.start, first.position);
    let texts: Vec<String> = backlog.messages.iter().map(|m| text(m)).collect();
    assert_eq!(texts, ["2"]);
    publish(&node, "x", "3").await;
    assert_eq!(next_texts(&mut c, 1).await, ["3"]);
    assert!(c.try_next().is_none());
}

#[tokio::test]
async fn a_message_queued_during_the_history_read_is_not_delivered_twice() {
    let node = node();
    let first = publish(&node, "x", "1").await;
    let mut c = node.connect(TransportKind::Sse).unwrap();
    // Subscribe, and before reading anything publish: the message is both
    // in the queue and (for a later resubscribe) in history.
    c.subscribe(&name("x"), Some(first.position)).await.unwrap();
    publish(&node, "x", "2").await;
    let again = c.subscribe(&name("x"), Some(first.position)).await.unwrap();
    assert_eq!(again.messages.len(), 1, "history has it");
    assert!(c.try_next().is_none(), "so the queued copy is dropped");
}

#[tokio::test]
async fn a_full_queue_kicks_only_that_connection() {
    let node = node();
    let mut slow = node.connect(TransportKind::Sse).unwrap();
    let mut fast = node.connect(TransportKind::Sse).unwrap();
    slow.subscribe(&name("x"), None).await.unwrap();
    fast.subscribe(&name("x"), None).await.unwrap();
    for i in 0..node::DEFAULT_QUEUE_LEN + 1 {
        publish(&node, "x", &i.to_string()).await;
        while fast.try_next().is_some() {}
    }
    assert!(matches!(slow.next().await, Event::SlowConsumer));
    publish(&node, "x", "after").await;
    assert!(matches!(fast.next().await, Event::Message(_)));
}

#[tokio::test]
async fn dropping_a_connection_unsubscribes_it() {
    let node = node();
    let mut c = node.connect(TransportKind::Sse).unwrap();
    c.subscribe(&name("x"), None).await.unwrap();
    assert_eq!(node.presence(&name("x"), 10).await.unwrap().connections, 1);
    drop(c);
    assert_eq!(node.presence(&name("x"), 10).await.unwrap().connections, 0);
    assert_eq!(node.admission().count(), 0);
}

#[tokio::test]
async fn big_payloads_and_too_many_channels_are_refused() {
    let node = node();
    let big = Payload::Binary(vec![0u8; node::DEFAULT_MAX_PAYLOAD + 1].into());
    assert!(matches!(
        node.publish(&name("a"), big).await,
        Err(ChannelError::TooLarge { .. })
    ));
    let mut c = node.connect(TransportKind::WebSocket).unwrap();
    for i in 0..node::DEFAULT_MAX_CHANNELS_PER_CONNECTION {
        c.subscribe(&name(&format!("c{i}")), None).await.unwrap();
    }
    // Again the same channel: no new subscription.
    c.subscribe(&name("c0"), None).await.unwrap();
    assert!(matches!(
        c.subscribe(&name("one-more"), None).await,
        Err(ChannelError::TooManyChannels(_))
    ));
}

#[tokio::test]
async fn a_lost_message_is_read_back_from_history() {
    let broker = Arc::new(LossyBroker::new(Arc::new(MemoryBroker::default()), |m| {
        m.position.offset == 3
    }));
    let node = node_over(broker.clone());
    let mut c = node.connect(TransportKind::WebSocket).unwrap();
    c.subscribe(&name("x"), None).await.unwrap();
    for i in 1..=6 {
        publish(&node, "x", &i.to_string()).await;
    }
    assert_eq!(next_texts(&mut c, 6).await, ["1", "2", "3", "4", "5", "6"]);
    assert!(c.try_next().is_none(), "nothing twice");
    assert_eq!(broker.lost(), 1);
    assert_eq!(node.stats().catch_ups, 1);
}

#[tokio::test]
async fn a_lost_message_that_history_lost_too_is_a_reset() {
    let limits = HistoryLimits {
        max_len: 2,
        ..HistoryLimits::default()
    };
    let mut namespaces = Namespaces::default();
    namespaces.default.history = limits;
    // Everything from 2 to 5 is lost on the way; history keeps 2.
    let broker = Arc::new(LossyBroker::new(Arc::new(MemoryBroker::default()), |m| {
        (2..=5).contains(&m.position.offset)
    }));
    let node = Node::new(
        broker,
        NodeConfig {
            namespaces,
            ..NodeConfig::default()
        },
        Arc::default(),
    );
    let mut c = node.connect(TransportKind::Sse).unwrap();
    c.subscribe(&name("x"), None).await.unwrap();
    for i in 1..=6 {
        publish(&node, "x", &i.to_string()).await;
    }
    assert_eq!(next_texts(&mut c, 1).await, ["1"]);
    match c.next().await {
        Event::Reset(reset) => {
            assert_eq!(reset.gap, Gap::TooOld);
            assert_eq!(reset.position.offset, 4);
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    assert_eq!(next_texts(&mut c, 2).await, ["5", "6"]);
}

#[tokio::test]
async fn the_subscribe_lock_subscribes_the_node_once() {
    let broker = Arc::new(Counting::default());
    let node = node_over(broker.clone());
    let mut a = node.connect(TransportKind::Sse).unwrap();
    let mut b = node.connect(TransportKind::Sse).unwrap();
    let x = name("x");
    let (ra, rb) = tokio::join!(a.subscribe(&x, None), b.subscribe(&x, None));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(broker.subscribes.load(Ordering::Acquire), 1);
    drop(a);
    drop(b);
    broker.unsubscribed(1).await;
}

#[tokio::test]
async fn top_channels_are_those_with_most_subscribers() {
    let node = node();
    let mut held = Vec::new();
    for (channel, subscribers) in [("one", 1), ("three", 3), ("two", 2), ("four", 4)] {
        for _ in 0..subscribers {
            let mut c = node.connect(TransportKind::Sse).unwrap();
            c.subscribe(&name(channel), None).await.unwrap();
            held.push(c);
        }
    }
    publish(&node, "three", "a").await;
    publish(&node, "three", "b").await;
    let top: Vec<(String, usize, u64)> = node
        .top_channels(2)
        .into_iter()
        .map(|(c, n, offset)| (c.to_string(), n, offset))
        .collect();
    assert_eq!(top, [("four".into(), 4, 0), ("three".into(), 3, 2)]);
    assert_eq!(node.top_channels(10).len(), 4);
    assert!(node.top_channels(0).is_empty());
}

/// An outlet that records what the hub's drains write to it.
#[derive(Debug, Default)]
struct Recorder {
    written: std::sync::Mutex<Vec<String>>,
    full: std::sync::atomic::AtomicBool,
}

impl Outlet for Recorder {
    fn write(&self, message: &Message) -> Result<(), OutletFull> {
        if self.full.load(Ordering::Acquire) {
            return Err(OutletFull);
        }
        lock(&self.written).push(text(message));
        Ok(())
    }
}

impl Recorder {
    fn written(&self) -> Vec<String> {
        lock(&self.written).clone()
    }

    /// Let the drains run (tests run on one thread) until `n` were written.
    async fn wait_for(&self, n: usize) {
        for _ in 0..1000 {
            if lock(&self.written).len() >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("expected {n} writes, got {:?}", self.written());
    }
}

/// Poll `c.next()` once: pending, so the connection waits idle from then
/// on (until it takes something again).
async fn go_idle(c: &mut Connection) {
    let next = c.next();
    tokio::pin!(next);
    std::future::poll_fn(|cx| {
        assert!(
            next.as_mut().poll(cx).is_pending(),
            "nothing should be ready"
        );
        std::task::Poll::Ready(())
    })
    .await;
}

/// A connection to `node` subscribed to `x`, whose outlet records.
async fn subscribed_with_recorder(node: &Arc<Node>) -> (Connection, Arc<Recorder>) {
    let mut c = node.connect(TransportKind::WebSocket).unwrap();
    let recorder = Arc::new(Recorder::default());
    c.set_outlet(Some(recorder.clone() as Arc<dyn Outlet>));
    c.subscribe(&name("x"), None).await.unwrap();
    (c, recorder)
}

#[tokio::test]
async fn drains_write_to_an_idle_connections_outlet_and_never_past_its_task() {
    let node = node();
    let (mut c, recorder) = subscribed_with_recorder(&node).await;
    // Busy since the subscription: its backlog goes out first, so live
    // messages wait for the task.
    publish(&node, "x", "1").await;
    assert_eq!(next_texts(&mut c, 1).await, ["1"]);
    go_idle(&mut c).await;
    publish(&node, "x", "2").await;
    publish(&node, "x", "3").await;
    recorder.wait_for(2).await;
    assert_eq!(recorder.written(), ["2", "3"]);
    assert!(c.try_next().is_none(), "written once, by the drain only");

    // Subscribing makes the task busy again: nothing of either channel is
    // written to the outlet until it has taken what was queued meanwhile.
    c.subscribe(&name("y"), None).await.unwrap();
    publish(&node, "y", "y1").await;
    publish(&node, "x", "4").await;
    tokio::task::yield_now().await;
    assert_eq!(next_texts(&mut c, 2).await, ["y1", "4"]);
    assert_eq!(recorder.written(), ["2", "3"]);
    go_idle(&mut c).await;
    publish(&node, "x", "5").await;
    recorder.wait_for(3).await;
    assert_eq!(recorder.written(), ["2", "3", "5"]);
    assert_eq!(c.cursor().get(&name("x")).map(|p| p.offset), Some(5));
}

#[tokio::test]
async fn a_jump_seen_by_a_drain_goes_back_to_the_task() {
    let broker = Arc::new(LossyBroker::new(Arc::new(MemoryBroker::default()), |m| {
        m.position.offset == 3
    }));
    let node = node_over(broker);
    let (mut c, recorder) = subscribed_with_recorder(&node).await;
    go_idle(&mut c).await;
    for i in 1..=6 {
        publish(&node, "x", &i.to_string()).await;
    }
    recorder.wait_for(2).await;
    // 3 never reached the hub: the drain stops at 4 and the task reads 3
    // and what follows from history; nothing is written twice.
    let mut all = recorder.written();
    all.extend(next_texts(&mut c, 4).await);
    assert_eq!(all, ["1", "2", "3", "4", "5", "6"]);
    assert!(c.try_next().is_none());
    assert_eq!(node.stats().catch_ups, 1);
}

#[tokio::test]
async fn a_full_outlet_wakes_the_task_as_a_slow_consumer() {
    let node = node();
    let (mut c, recorder) = subscribed_with_recorder(&node).await;
    // The task waits idle: only the drain's kick can wake it.
    let waiting = tokio::spawn(async move {
        let event = c.next().await;
        (c, event)
    });
    tokio::task::yield_now().await;
    recorder.full.store(true, Ordering::Release);
    publish(&node, "x", "1").await;
    let (_c, event) = waiting.await.unwrap();
    assert!(matches!(event, Event::SlowConsumer), "got {event:?}");
    assert_eq!(node.stats().slow_consumers, 1);
}

/// A subscription dropped half way (a transport raced it against its
/// socket) leaves the channel: no subscriber stays behind in the hub, and
/// the node unsubscribes at the broker.
#[tokio::test]
async fn a_cancelled_subscription_leaves_the_channel() {
    let broker = Arc::new(Counting {
        stall_history: true,
        ..Counting::default()
    });
    let node = node_over(broker.clone());
    let mut c = node.connect(TransportKind::Sse).unwrap();
    let x = name("x");
    let subscribe = c.subscribe(&x, None);
    // Joined, then waiting for history: give up on it.
    let waited = tokio::time::timeout(std::time::Duration::from_millis(50), subscribe).await;
    assert!(waited.is_err());
    assert_eq!(node.local_channel_count(), 0);
    assert!(c.channels().is_empty());
    broker.unsubscribed(1).await;
}
