//! Instructing nodes over their control ports (LA/LC): `POST /v1/channels` with the JSON of
//! [`crate::control::instruction_json`], deduplicated per (node, channel), renewed before the
//! instruction's `ttl_s` runs out, every level of a hierarchy top first. An instruction that
//! came from an ALTO notification (a third-party CDN controller chose the endpoint) is
//! *pinned*: its renewals re-send it as it was, not what the topology would say.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::topology::Step;
use super::Instructor;
use crate::control::instruction_json;
use crate::Instruction;

/// Most prefetched playlist paths remembered per (node, channel) (viewer-chosen, so bounded).
const MAX_PREFETCHED: usize = 32;
/// Most (node, channel) slots; pinned instructions name channels a CDN controller chose, so
/// their number is bounded here.
const MAX_SLOTS: usize = 65_536;

/// Completion of one instruction job, shared by everyone waiting for it.
#[derive(Debug, Default)]
pub(crate) struct Ticket {
    done: Mutex<Option<Result<(), String>>>,
    cv: Condvar,
}

impl Ticket {
    fn finish(&self, r: Result<(), String>) {
        *self.done.lock() = Some(r);
        self.cv.notify_all();
    }

    /// The result, or `None` if it did not come by `deadline`.
    pub(crate) fn wait_until(&self, deadline: Instant) -> Option<Result<(), String>> {
        let mut g = self.done.lock();
        while g.is_none() {
            if self.cv.wait_until(&mut g, deadline).timed_out() {
                break;
            }
        }
        g.clone()
    }
}

/// What the dedup table knows of one (node, channel).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Last acknowledged instruction: when, and its signature (endpoints, prefix, host).
    ok: Option<(Instant, String)>,
    /// The job currently instructing it.
    in_flight: Option<Arc<Ticket>>,
    /// Playlist paths already prefetched under the current instruction.
    prefetched: Vec<String>,
    /// Last failure: when and why.
    failed: Option<(Instant, String)>,
    /// The node's control port.
    control: Option<SocketAddr>,
    /// The acknowledged instruction when it came from an ALTO notification: renewed as is.
    pinned: Option<Instruction>,
}

/// Slots by (node listen address, channel name).
pub(crate) type Slots = HashMap<(SocketAddr, String), Slot>;

/// What a caller of [`Instructor::dispatch`] has to wait for before it redirects.
#[derive(Debug)]
pub(crate) enum Dispatch {
    /// Every level is instructed already (a renewal may be under way).
    Ready,
    /// Wait for these tickets (bounded by the caller's deadline).
    Wait(Vec<Arc<Ticket>>),
    /// A level failed recently; don't send the viewer to that node.
    Failed(String),
}

#[allow(clippy::large_enum_variant)] // a handful per job, never stored for long
enum Item {
    Post { key: (SocketAddr, String), control: SocketAddr, instruction: Instruction, sig: String, pinned: bool },
    Wait(Arc<Ticket>),
}

fn signature(ins: &Instruction) -> String {
    format!("{}|{}|{:?}|{:?}", ins.channel, ins.path_prefix, ins.endpoints, ins.host)
}

impl Instructor {
    /// Makes sure every step's node is instructed; posts what is missing or due for renewal in a
    /// background thread. `prefetch` is the playlist path for the last (chosen) node. `pinned`:
    /// the steps came from an ALTO notification (renewals re-send them as they are).
    pub(crate) fn dispatch(&self, steps: &[Step], prefetch: Option<&str>, pinned: bool) -> Dispatch {
        let now = Instant::now();
        let ttl = Duration::from_secs(self.cfg.ttl_s.max(1));
        let renew_after = ttl / 2;
        let job = Arc::new(Ticket::default());
        let mut items = Vec::new();
        let mut waits: Vec<Arc<Ticket>> = Vec::new();
        let mut wait_job = false;
        {
            let mut slots = self.slots.lock();
            for (i, step) in steps.iter().enumerate() {
                let leaf = i + 1 == steps.len();
                let key = (step.node, step.instruction.channel.clone());
                let sig = signature(&step.instruction);
                if slots.len() >= MAX_SLOTS && !slots.contains_key(&key) {
                    return Dispatch::Failed(format!("{} not instructed: too many (node, channel) pairs", step.node));
                }
                let slot = slots.entry(key.clone()).or_default();
                slot.control = Some(step.control);
                let current = slot.ok.as_ref().filter(|(at, s)| *s == sig && now.duration_since(*at) < ttl).map(|(at, _)| *at);
                let want = match prefetch {
                    Some(p) if leaf && !slot.prefetched.iter().any(|x| x == p) => Some(p.to_string()),
                    _ => None,
                };
                let mut ins = step.instruction.clone();
                ins.ttl_s = Some(self.cfg.ttl_s.max(1));
                ins.prefetch = want.iter().cloned().collect();
                match current {
                    Some(at) => {
                        let stale = now.duration_since(at) >= renew_after;
                        if (stale || want.is_some()) && slot.in_flight.is_none() {
                            slot.in_flight = Some(job.clone());
                            items.push(Item::Post { key, control: step.control, instruction: ins, sig, pinned });
                        }
                    }
                    None => {
                        if let Some(t) = &slot.in_flight {
                            waits.push(t.clone());
                            items.push(Item::Wait(t.clone()));
                        } else if let Some((at, why)) = slot.failed.as_ref().filter(|(at, _)| now.duration_since(*at) < self.cfg.retry_after) {
                            let _ = at;
                            return Dispatch::Failed(format!("{} not instructed: {why}", step.node));
                        } else {
                            slot.in_flight = Some(job.clone());
                            wait_job = true;
                            items.push(Item::Post { key, control: step.control, instruction: ins, sig, pinned });
                        }
                    }
                }
            }
        }
        if items.iter().any(|i| matches!(i, Item::Post { .. })) {
            self.spawn_job(items, job.clone());
            if wait_job {
                waits.push(job);
            }
        }
        if waits.is_empty() {
            Dispatch::Ready
        } else {
            Dispatch::Wait(waits)
        }
    }

    /// Runs a job's items in order in a new thread (a failed level stops the levels below it).
    fn spawn_job(&self, items: Vec<Item>, job: Arc<Ticket>) {
        let keys: Vec<(SocketAddr, String)> =
            items.iter().filter_map(|i| if let Item::Post { key, .. } = i { Some(key.clone()) } else { None }).collect();
        let failed = match self.me.lock().upgrade() {
            None => Some("instructor stopped"),
            Some(me) => {
                let job = job.clone();
                let spawned = std::thread::Builder::new().name("listo-instruct".into()).spawn(move || me.run_job(items, &job));
                spawned.err().map(|_| "cannot start a thread")
            }
        };
        if let Some(why) = failed {
            let mut slots = self.slots.lock();
            for k in keys {
                if let Some(s) = slots.get_mut(&k) {
                    if s.in_flight.as_ref().is_some_and(|t| Arc::ptr_eq(t, &job)) {
                        s.in_flight = None;
                    }
                }
            }
            drop(slots);
            job.finish(Err(why.into()));
        }
    }

    fn run_job(&self, items: Vec<Item>, job: &Arc<Ticket>) {
        let mut result: Result<(), String> = Ok(());
        for item in items {
            match item {
                Item::Wait(t) => {
                    if result.is_ok() {
                        result = t.wait_until(Instant::now() + self.cfg.post_timeout * 4).unwrap_or_else(|| Err("upper level timed out".into()));
                    }
                }
                Item::Post { key, control, instruction, sig, pinned } => {
                    let r = match &result {
                        Ok(()) => post_instruction(control, &instruction, self.cfg.post_timeout),
                        Err(e) => Err(format!("upper level failed: {e}")),
                    };
                    self.stats.posts.fetch_add(1, Ordering::Relaxed);
                    if r.is_err() {
                        self.stats.post_failures.fetch_add(1, Ordering::Relaxed);
                    }
                    match &r {
                        Ok(()) if self.cfg.verbose => eprintln!("listo: instructed {} ({control}) with {}", key.0, instruction_json(&instruction)),
                        Ok(()) => {}
                        Err(e) => eprintln!("listo: instructing node {} ({control}) failed: {e}", key.0),
                    }
                    let mut slots = self.slots.lock();
                    let slot = slots.entry(key).or_default();
                    if slot.in_flight.as_ref().is_some_and(|t| Arc::ptr_eq(t, job)) {
                        slot.in_flight = None;
                    }
                    match &r {
                        Ok(()) => {
                            let same = slot.ok.as_ref().is_some_and(|(_, s)| *s == sig);
                            if !same {
                                slot.prefetched.clear();
                            }
                            slot.ok = Some((Instant::now(), sig));
                            slot.failed = None;
                            slot.pinned = pinned.then(|| Instruction { prefetch: Vec::new(), ttl_s: None, ..instruction.clone() });
                            for p in instruction.prefetch {
                                if slot.prefetched.len() >= MAX_PREFETCHED {
                                    slot.prefetched.remove(0);
                                }
                                slot.prefetched.push(p);
                            }
                        }
                        Err(e) => {
                            slot.failed = Some((Instant::now(), e.clone()));
                        }
                    }
                    drop(slots);
                    if result.is_ok() {
                        result = r;
                    }
                }
            }
        }
        job.finish(result);
    }

    /// Renews every acknowledged instruction older than half its TTL, re-instructs those the
    /// topology changed, and forgets those whose node or channel left the topology.
    pub(crate) fn renew_due(&self) {
        let topo = self.topology();
        let now = Instant::now();
        let renew_after = Duration::from_secs(self.cfg.ttl_s.max(1)) / 2;
        let mut jobs = Vec::new();
        {
            let mut slots = self.slots.lock();
            slots.retain(|(node, channel), slot| {
                let Some(n) = topo.node(*node) else { return false };
                let mut ins = match &slot.pinned {
                    Some(p) => p.clone(),
                    None => {
                        let Some(c) = topo.channel(channel) else { return false };
                        topo.instruction_for(n, c)
                    }
                };
                let Some((at, sig)) = &slot.ok else { return true };
                let new_sig = signature(&ins);
                if slot.in_flight.is_none() && (now.duration_since(*at) >= renew_after || *sig != new_sig) {
                    ins.ttl_s = Some(self.cfg.ttl_s.max(1));
                    // Each renewal stands alone: one failing must not hold up the others.
                    let t = Arc::new(Ticket::default());
                    slot.in_flight = Some(t.clone());
                    slot.control = Some(n.control);
                    let pinned = slot.pinned.is_some();
                    jobs.push((Item::Post { key: (*node, channel.clone()), control: n.control, instruction: ins, sig: new_sig, pinned }, t));
                }
                true
            });
        }
        self.stats.renewals.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        for (item, t) in jobs {
            self.spawn_job(vec![item], t);
        }
    }
}

/// POSTs one instruction to a node's control port; `Ok` on 200/201.
pub fn post_instruction(control: SocketAddr, ins: &Instruction, timeout: Duration) -> Result<(), String> {
    let body = instruction_json(ins).to_string();
    let head = format!(
        "POST /v1/channels HTTP/1.1\r\nHost: {control}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut s = TcpStream::connect_timeout(&control, timeout).map_err(|e| format!("connect {control}: {e}"))?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut req = head.into_bytes();
    req.extend_from_slice(body.as_bytes());
    s.write_all(&req).map_err(|e| format!("write {control}: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > 64 * 1024 {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if buf.is_empty() => return Err(format!("read {control}: {e}")),
            Err(_) => break,
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(format!("{control}: malformed response")),
    };
    match resp.code {
        Some(200) | Some(201) => Ok(()),
        Some(code) => {
            let body = String::from_utf8_lossy(&buf[head_len..buf.len().min(head_len + 300)]).trim().to_string();
            Err(format!("{control} answered {code}: {body}"))
        }
        None => Err(format!("{control}: no status")),
    }
}
