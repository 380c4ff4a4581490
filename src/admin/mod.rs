//! `admin` (seed M2, LR interface): counters per channel and node, and the events an OSS
//! collects (channel instructed or withdrawn, upstream failures, rejected requests).

use std::collections::VecDeque;

mod stats;
pub use stats::{ChannelStats, EndpointStats, LatencyHistogram, RenditionStats, Stats, UpstreamErrorKind, UpstreamErrors, LATENCY_BOUNDS_MS};

/// How much an event matters (RFC 5424 severities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something failed for viewers (RFC 5424 severity 3).
    Error = 3,
    /// Degraded but serving (4).
    Warning = 4,
    /// A normal but significant change (5).
    Notice = 5,
    /// Routine (6).
    Info = 6,
}

/// Something an operator's OSS wants to know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new channel was instructed.
    ChannelInstructed {
        /// Channel name.
        channel: String,
    },
    /// An instructed channel was replaced (new endpoints apply to new fetches).
    ChannelReplaced {
        /// Channel name.
        channel: String,
    },
    /// A channel was withdrawn.
    ChannelWithdrawn {
        /// Channel name.
        channel: String,
    },
    /// A channel's instruction reached its `ttl_s` without being renewed.
    ChannelExpired {
        /// Channel name.
        channel: String,
    },
    /// A CDN endpoint failed after having worked (or on first use).
    EndpointFailed {
        /// Channel whose fetch failed.
        channel: String,
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A failed CDN endpoint answered again.
    EndpointRecovered {
        /// The endpoint.
        endpoint: String,
    },
    /// A fetch failed on one endpoint and is retried on the next.
    Failover {
        /// Channel.
        channel: String,
        /// Endpoint that failed.
        from: String,
        /// Endpoint tried next.
        to: String,
    },
    /// An upstream fetch failed for good; its viewers got `status` or a close.
    UpstreamFailed {
        /// Channel name.
        channel: String,
        /// Path fetched.
        path: String,
        /// 502 or 504.
        status: u16,
        /// Why.
        reason: String,
    },
    /// The store went over its memory budget and evicted objects.
    MemoryPressure {
        /// Objects evicted.
        evicted: u64,
        /// Body bytes the store holds after eviction.
        store_bytes: u64,
    },
    /// A viewer request was refused with an error status.
    RequestRejected {
        /// Status sent (400, 404, 405, 408, 414, 431, 505).
        status: u16,
        /// Why.
        reason: String,
    },
    /// The node is draining: responses in progress finish, connections then close.
    NodeDraining,
    /// A rendition's media sequence went backwards (origin restart): its cached segments were
    /// dropped so reused names are fetched anew.
    RenditionReset {
        /// Channel.
        channel: String,
        /// Media playlist path.
        playlist: String,
        /// Media sequence before.
        from: u64,
        /// Media sequence now.
        to: u64,
        /// Cached objects dropped.
        dropped: u64,
    },
}

impl Event {
    /// Its severity.
    pub fn severity(&self) -> Severity {
        match self {
            Event::UpstreamFailed { .. } | Event::EndpointFailed { .. } => Severity::Error,
            Event::Failover { .. } | Event::MemoryPressure { .. } | Event::ChannelExpired { .. } | Event::RenditionReset { .. } => {
                Severity::Warning
            }
            Event::ChannelInstructed { .. }
            | Event::ChannelReplaced { .. }
            | Event::ChannelWithdrawn { .. }
            | Event::EndpointRecovered { .. }
            | Event::NodeDraining => Severity::Notice,
            Event::RequestRejected { .. } => Severity::Info,
        }
    }

    /// A stable name for the kind (`channel_instructed`, `endpoint_failed`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ChannelInstructed { .. } => "channel_instructed",
            Event::ChannelReplaced { .. } => "channel_replaced",
            Event::ChannelWithdrawn { .. } => "channel_withdrawn",
            Event::ChannelExpired { .. } => "channel_expired",
            Event::EndpointFailed { .. } => "endpoint_failed",
            Event::EndpointRecovered { .. } => "endpoint_recovered",
            Event::Failover { .. } => "failover",
            Event::UpstreamFailed { .. } => "upstream_failed",
            Event::MemoryPressure { .. } => "memory_pressure",
            Event::RequestRejected { .. } => "request_rejected",
            Event::NodeDraining => "node_draining",
            Event::RenditionReset { .. } => "rendition_reset",
        }
    }

    /// Its fields as (name, value) pairs, for structured logs.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Event::ChannelInstructed { channel }
            | Event::ChannelReplaced { channel }
            | Event::ChannelWithdrawn { channel }
            | Event::ChannelExpired { channel } => vec![("channel", channel.clone())],
            Event::EndpointFailed { channel, endpoint, reason } => {
                vec![("channel", channel.clone()), ("endpoint", endpoint.clone()), ("reason", reason.clone())]
            }
            Event::EndpointRecovered { endpoint } => vec![("endpoint", endpoint.clone())],
            Event::Failover { channel, from, to } => {
                vec![("channel", channel.clone()), ("from", from.clone()), ("to", to.clone())]
            }
            Event::UpstreamFailed { channel, path, status, reason } => vec![
                ("channel", channel.clone()),
                ("path", path.clone()),
                ("status", status.to_string()),
                ("reason", reason.clone()),
            ],
            Event::MemoryPressure { evicted, store_bytes } => {
                vec![("evicted", evicted.to_string()), ("store_bytes", store_bytes.to_string())]
            }
            Event::RequestRejected { status, reason } => vec![("status", status.to_string()), ("reason", reason.clone())],
            Event::NodeDraining => Vec::new(),
            Event::RenditionReset { channel, playlist, from, to, dropped } => vec![
                ("channel", channel.clone()),
                ("playlist", playlist.clone()),
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("dropped", dropped.to_string()),
            ],
        }
    }
}

/// A bounded queue of events: the oldest are dropped (and counted) when the host does not drain.
#[derive(Debug)]
pub struct EventQueue {
    queue: VecDeque<Event>,
    cap: usize,
    dropped: u64,
    tx: Option<crossbeam_channel::Sender<Event>>,
}

impl EventQueue {
    /// A queue holding at most `cap` events.
    pub fn new(cap: usize) -> Self {
        EventQueue { queue: VecDeque::new(), cap: cap.max(1), dropped: 0, tx: None }
    }

    /// Also sends every event to a channel whose receiver another thread reads (a logger).
    /// A full channel drops the event for that receiver (counted with the others).
    pub fn subscribe(&mut self, cap: usize) -> crossbeam_channel::Receiver<Event> {
        let (tx, rx) = crossbeam_channel::bounded(cap.max(1));
        self.tx = Some(tx);
        rx
    }

    /// Queues an event, dropping the oldest when full.
    pub fn push(&mut self, e: Event) {
        if let Some(tx) = &self.tx {
            match tx.try_send(e.clone()) {
                Ok(()) => {}
                Err(crossbeam_channel::TrySendError::Full(_)) => self.dropped += 1,
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => self.tx = None,
            }
        }
        if self.queue.len() >= self.cap {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(e);
    }

    /// The oldest event.
    pub fn pop(&mut self) -> Option<Event> {
        self.queue.pop_front()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_queue_drops_oldest() {
        let mut q = EventQueue::new(2);
        for i in 0..3 {
            q.push(Event::ChannelWithdrawn { channel: i.to_string() });
        }
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.pop(), Some(Event::ChannelWithdrawn { channel: "1".into() }));
    }
}
