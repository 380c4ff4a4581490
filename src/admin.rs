//! `admin` (seed M2, LR interface): counters per channel and node, and the events an OSS
//! collects (channel instructed or withdrawn, upstream failures, rejected requests).

use std::collections::VecDeque;

/// Counters of one channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Channel name.
    pub channel: String,
    /// Viewers: distinct sessions (client address + User-Agent) that asked for something of
    /// this channel within its target duration — not TCP connections.
    pub viewers: u64,
    /// Most viewers at once.
    pub peak_viewers: u64,
    /// Viewer-seconds watched.
    pub viewer_seconds: u64,
    /// Open viewer connections whose latest request was for this channel.
    pub viewer_connections: u64,
    /// Requests routed to this channel.
    pub requests: u64,
    /// Requests answered from a complete, fresh object.
    pub hits: u64,
    /// Requests attached to an object already being fetched (read-while-write).
    pub coalesced: u64,
    /// Requests that started an upstream fetch.
    pub misses: u64,
    /// Upstream requests sent (including retries).
    pub upstream_requests: u64,
    /// Upstream body bytes received.
    pub upstream_bytes: u64,
    /// Bytes (heads and bodies) the host reported written to this channel's viewers.
    pub downstream_bytes: u64,
    /// Upstream fetches that failed (viewers got 502/504 or a close).
    pub upstream_failures: u64,
    /// Segment fetches the node started before any viewer asked.
    pub prefetches: u64,
    /// Viewer requests for segments (not playlists).
    pub segment_requests: u64,
    /// Segment requests answered entirely from a complete object.
    pub segment_hits: u64,
}

/// Node-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Per channel, in instruction order.
    pub channels: Vec<ChannelStats>,
    /// Open viewer connections.
    pub viewer_connections: u64,
    /// Open upstream connections.
    pub upstream_connections: u64,
    /// Objects in the store.
    pub store_objects: u64,
    /// Body bytes in the store.
    pub store_bytes: u64,
    /// Objects evicted for the memory budget.
    pub evictions: u64,
    /// Error responses sent to viewers, by class: (status, count).
    pub errors: Vec<(u16, u64)>,
    /// Bytes written to viewers, all channels and error responses included.
    pub downstream_bytes: u64,
    /// Viewers disconnected because their queued output exceeded the backlog limit.
    pub slow_viewers_dropped: u64,
    /// Media playlists the node is following (refreshing and prefetching) for its viewers.
    pub followed_playlists: u64,
}

/// Something an operator's OSS wants to know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A channel was instructed (added or replaced).
    ChannelInstructed {
        /// Channel name.
        channel: String,
    },
    /// A channel was withdrawn.
    ChannelWithdrawn {
        /// Channel name.
        channel: String,
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
    /// A viewer request was refused with an error status.
    RequestRejected {
        /// Status sent (400, 404, 405, 408, 414, 431, 505).
        status: u16,
        /// Why.
        reason: String,
    },
}

/// A bounded queue of events: the oldest are dropped (and counted) when the host does not drain.
#[derive(Debug)]
pub struct EventQueue {
    queue: VecDeque<Event>,
    cap: usize,
    dropped: u64,
}

impl EventQueue {
    /// A queue holding at most `cap` events.
    pub fn new(cap: usize) -> Self {
        EventQueue { queue: VecDeque::new(), cap: cap.max(1), dropped: 0 }
    }

    /// Queues an event, dropping the oldest when full.
    pub fn push(&mut self, e: Event) {
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
