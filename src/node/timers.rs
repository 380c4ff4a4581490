//! Deadlines: a min-heap of (deadline, what) with lazy invalidation. An entity keeps its own
//! current deadline; a popped entry whose entity moved its deadline later is simply re-armed,
//! so pushing happens only when a deadline moves earlier.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::Node;
use crate::config::SECOND;
use crate::upstream::UpPhase;

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKey {
    Viewer(u64),
    Upstream(u64),
    Sweep,
    Follow(u64),
    Gate(u64),
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    heap: BinaryHeap<Reverse<(u64, TimerKey)>>,
    sweep_at: Option<u64>,
}

impl Timers {
    pub(super) fn push(&mut self, at: u64, key: TimerKey) {
        if at != u64::MAX {
            self.heap.push(Reverse((at, key)));
        }
    }

    pub(super) fn next(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// The next due entry and the deadline it was pushed with.
    pub(super) fn pop_due(&mut self, now: u64) -> Option<(u64, TimerKey)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Arms the store sweep one second from `now` unless armed.
    pub(super) fn arm_sweep(&mut self, now: u64) {
        if self.sweep_at.is_none() {
            self.sweep_at = Some(now + SECOND);
            self.push(now + SECOND, TimerKey::Sweep);
        }
    }
}

impl Node {
    /// When the viewer's next timer is due: 408 for a head in progress, close when idle.
    fn viewer_deadline(&self, id: u64) -> u64 {
        let Some(v) = self.viewers.get(&id) else { return u64::MAX };
        if v.wants_close() {
            return u64::MAX;
        }
        if v.has_partial_head() {
            return v.head_started.unwrap_or(v.last_activity) + self.cfg.head_timeout;
        }
        if !v.out.is_empty() {
            // Output waits and the socket took nothing for this long: a viewer that stopped reading.
            return v.last_activity + self.cfg.idle_timeout;
        }
        if v.is_idle() {
            // A connection that never sent a request holds a descriptor for nothing: it gets
            // no longer than a slow head would.
            let wait = if v.seen_request { self.cfg.idle_timeout } else { self.cfg.head_timeout.min(self.cfg.idle_timeout) };
            return v.last_activity + wait;
        }
        u64::MAX
    }

    pub(super) fn reschedule_viewer(&mut self, id: u64) {
        let at = self.viewer_deadline(id);
        if let Some(v) = self.viewers.get_mut(&id) {
            if at < v.scheduled {
                v.scheduled = at;
                self.timers.push(at, TimerKey::Viewer(id));
            }
        }
    }

    pub(super) fn reschedule_upstream(&mut self, id: u64) {
        if let Some(c) = self.upstreams.get_mut(&id) {
            if c.deadline < c.scheduled {
                c.scheduled = c.deadline;
                self.timers.push(c.deadline, TimerKey::Upstream(id));
            }
        }
    }

    /// A viewer's timer entry pushed for `pushed` popped. Entries superseded by an earlier one
    /// are dropped here, so the heap holds at most one live entry per viewer.
    pub(super) fn viewer_timer(&mut self, now: u64, id: u64, pushed: u64) {
        let at = self.viewer_deadline(id);
        let Some(v) = self.viewers.get_mut(&id) else { return };
        if v.scheduled != pushed {
            return;
        }
        v.scheduled = u64::MAX;
        if at > now {
            self.reschedule_viewer(id);
            return;
        }
        if v.has_partial_head() {
            v.stop_reading = true;
            self.reject(now, id, 408, "request head not received in time");
            self.progress_viewer(now, id);
        } else if !v.out.is_empty() {
            v.abort = true;
            v.out.clear();
            v.out_len = 0;
            self.slow_viewers += 1;
            self.mark_ready(super::ConnId::Viewer(super::ViewerId(id)));
        } else {
            // Idle keep-alive connection: close quietly.
            v.close_after_flush = true;
            self.mark_ready(super::ConnId::Viewer(super::ViewerId(id)));
        }
    }

    /// An upstream connection's timer entry pushed for `pushed` popped (superseded ones dropped).
    pub(super) fn upstream_timer(&mut self, now: u64, id: u64, pushed: u64) {
        let Some(c) = self.upstreams.get_mut(&id) else { return };
        if c.scheduled != pushed {
            return;
        }
        c.scheduled = u64::MAX;
        if c.deadline > now {
            self.reschedule_upstream(id);
            return;
        }
        c.deadline = u64::MAX;
        let phase = c.phase.clone();
        match phase {
            UpPhase::Idle => self.close_upstream(now, id),
            UpPhase::Connecting | UpPhase::AwaitHead | UpPhase::Body => {
                self.close_upstream(now, id);
                self.conn_failed(now, id, phase, 504, "upstream timed out");
            }
            UpPhase::Closing => {}
        }
    }

    pub(super) fn sweep(&mut self, now: u64) {
        self.timers.sweep_at = None;
        self.store.expire(now);
        self.shared_sweep(now);
        self.enforce_budget(now);
        self.expire_channels(now);
        self.audience_tick(now);
        if !self.store.is_empty() || !self.viewers.is_empty() || !self.channel_expiry.is_empty() {
            self.timers.arm_sweep(now);
        }
    }
}
