//! A simulated player: one connection for playlists, one for segments; reads responses without
//! copying segment bodies (a sample of players checks every byte against the origin).

use std::collections::VecDeque;

use bytes::Bytes;

use super::Origin;
use crate::ViewerId;

/// A response a client finished reading.
#[derive(Debug, Default)]
pub struct Completed {
    /// Status code.
    pub status: u16,
    /// Body (playlists only; segments are counted, not kept).
    pub body: Vec<u8>,
    /// Bytes that differed from the origin's.
    pub corrupt: u64,
}

/// The client side of one connection: head parse, then a Content-Length body.
#[derive(Debug, Default)]
pub struct Client {
    head: Vec<u8>,
    in_body: bool,
    status: u16,
    remaining: u64,
    offset: usize,
    keep_body: bool,
    body: Vec<u8>,
    verify: bool,
    expect: Option<Bytes>,
    corrupt: u64,
    expect_key: Option<(usize, u64)>,
}

impl Client {
    /// The next response is segment `seq` of channel `c` (checked if this client verifies).
    pub fn expect_segment(&mut self, c: usize, seq: u64) {
        self.expect_key = Some((c, seq));
    }

    /// Reads bytes the node wrote; pushes finished responses.
    pub fn feed(&mut self, mut data: &[u8], origin: &Origin, done: &mut Vec<Completed>) {
        while !data.is_empty() {
            if !self.in_body {
                self.head.extend_from_slice(data);
                let Some(end) = crate::http::find_header_end(&self.head, 1 << 16) else { return };
                let extra = self.head.len() - end;
                data = &data[data.len() - extra..];
                let text = String::from_utf8_lossy(&self.head[..end]).into_owned();
                self.head.clear();
                self.status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                self.remaining = text
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                self.in_body = true;
                self.offset = 0;
                self.body.clear();
                let key = self.expect_key.take();
                self.expect = match (self.verify, key) {
                    (true, Some((c, seq))) if self.status == 200 => Some(origin.segment_bytes(c, seq)),
                    _ => None,
                };
                // Playlist bodies are kept (parsed by the player); segment bodies never are.
                self.keep_body = key.is_none();
            }
            let n = (data.len() as u64).min(self.remaining) as usize;
            let piece = &data[..n];
            if let Some(exp) = &self.expect {
                let want = exp.get(self.offset..self.offset + n);
                if want != Some(piece) {
                    self.corrupt += n as u64;
                }
            } else if self.keep_body {
                self.body.extend_from_slice(piece);
            }
            self.offset += n;
            self.remaining -= n as u64;
            data = &data[n..];
            if self.remaining == 0 {
                self.in_body = false;
                done.push(Completed {
                    status: self.status,
                    body: std::mem::take(&mut self.body),
                    corrupt: std::mem::take(&mut self.corrupt),
                });
            }
        }
    }
}

/// One simulated player.
#[derive(Debug)]
pub struct Player {
    /// Channel watched.
    pub channel: usize,
    playlist_conn: Option<ViewerId>,
    segment_conn: Option<ViewerId>,
    /// Playlist connection's client.
    pub pl: Client,
    /// Segment connection's client.
    pub seg: Client,
    /// A playlist request is out.
    pub playlist_busy: bool,
    /// When the last playlist request went out.
    pub playlist_asked_at: u64,
    next_seq: Option<u64>,
    /// Segments learned and not yet asked for: (seq, when learned).
    pub queue: VecDeque<(u64, u64)>,
    /// The segment being fetched: (seq, when learned).
    pub segment_in_flight: Option<(u64, u64)>,
}

impl Player {
    /// A player of `channel`; `verify` checks every segment byte.
    pub fn new(channel: usize, verify: bool) -> Self {
        let seg = Client { verify, ..Default::default() };
        Player {
            channel,
            playlist_conn: None,
            segment_conn: None,
            pl: Client::default(),
            seg,
            playlist_busy: false,
            playlist_asked_at: 0,
            next_seq: None,
            queue: VecDeque::new(),
            segment_in_flight: None,
        }
    }

    /// The client of the playlist (false) or segment (true) connection.
    pub fn client(&mut self, is_seg: bool) -> &mut Client {
        if is_seg {
            &mut self.seg
        } else {
            &mut self.pl
        }
    }

    /// The open connection of that kind.
    pub fn conn(&self, is_seg: bool) -> Option<ViewerId> {
        if is_seg {
            self.segment_conn
        } else {
            self.playlist_conn
        }
    }

    /// Records a newly opened connection.
    pub fn set_conn(&mut self, is_seg: bool, v: ViewerId) {
        if is_seg {
            self.segment_conn = Some(v);
        } else {
            self.playlist_conn = Some(v);
        }
    }

    /// The node closed a connection: a request in flight on it is lost (and retried).
    pub fn conn_closed(&mut self, is_seg: bool) {
        if is_seg {
            self.segment_conn = None;
            self.seg = Client { verify: self.seg.verify, ..Default::default() };
            if let Some(s) = self.segment_in_flight.take() {
                self.queue.push_front(s);
            }
        } else {
            self.playlist_conn = None;
            self.pl = Client::default();
            self.playlist_busy = false;
        }
    }

    /// A playlist listed `seqs`: queue the new ones (a new player starts 3 behind live).
    pub fn learn(&mut self, seqs: &[u64], now: u64) {
        let Some(&last) = seqs.last() else { return };
        let first = seqs[0];
        let next = *self.next_seq.get_or_insert(last.saturating_sub(2).max(first));
        for &s in seqs.iter().filter(|s| **s >= next) {
            self.queue.push_back((s, now));
        }
        self.next_seq = Some(next.max(last + 1));
    }
}
