//! Events to the OSS (LR): every node event is kept in a numbered ring (served by the admin
//! port as `GET /v1/events?since=N`) and written as an RFC 5424 syslog line to stderr or over
//! UDP.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Event;

/// Where event lines go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EventSink {
    /// Nowhere (the ring and `/v1/events` still have them).
    #[default]
    None,
    /// One syslog line per event on stderr.
    Stderr,
    /// Syslog over UDP (RFC 5426) to this collector.
    Udp(SocketAddr),
}

/// The numbered ring of recent events and the sink.
#[derive(Debug)]
pub(super) struct EventLog {
    ring: VecDeque<(u64, u64, Event)>,
    next: u64,
    sink: EventSink,
    udp: Option<UdpSocket>,
    hostname: String,
}

const RING: usize = 1024;
/// RFC 5424 facility local0.
const FACILITY: u8 = 16;
/// Private enterprise number used for the structured-data id (documentation range, RFC 5612).
const SD_ID: &str = "listo@32473";

impl EventLog {
    pub(super) fn new(sink: EventSink) -> Self {
        let udp = match &sink {
            EventSink::Udp(addr) => {
                let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
                UdpSocket::bind(bind).ok()
            }
            _ => None,
        };
        EventLog { ring: VecDeque::new(), next: 1, sink, udp, hostname: hostname() }
    }

    /// Records an event: ring, then sink.
    pub(super) fn record(&mut self, e: Event) {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let seq = self.next;
        self.next += 1;
        let line = syslog_line(&e, unix_ms, &self.hostname, std::process::id());
        match &self.sink {
            EventSink::None => {}
            EventSink::Stderr => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            EventSink::Udp(addr) => {
                if let Some(s) = &self.udp {
                    let _ = s.send_to(line.as_bytes(), addr);
                }
            }
        }
        if self.ring.len() >= RING {
            self.ring.pop_front();
        }
        self.ring.push_back((seq, unix_ms, e));
    }

    /// Events numbered above `since`, as JSON.
    pub(super) fn since_json(&self, since: u64) -> serde_json::Value {
        let events: Vec<serde_json::Value> = self
            .ring
            .iter()
            .filter(|(seq, _, _)| *seq > since)
            .map(|(seq, ms, e)| {
                let mut fields = serde_json::Map::new();
                for (k, v) in e.fields() {
                    fields.insert(k.to_string(), v.into());
                }
                serde_json::json!({
                    "seq": seq, "unix_ms": ms, "kind": e.kind(),
                    "severity": format!("{:?}", e.severity()).to_lowercase(), "fields": fields,
                })
            })
            .collect();
        serde_json::json!({ "next": self.next, "events": events })
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    let name = if r == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    // RFC 5424 HOSTNAME: 1*255 PRINTUSASCII, or "-".
    let clean: String = name.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    if clean.is_empty() {
        "-".into()
    } else {
        clean
    }
}

/// `2026-11-25T10:08:07.123Z` from Unix milliseconds (proleptic Gregorian, UTC).
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, unix_ms % 1000)
}

/// One RFC 5424 line: `<PRI>1 TIMESTAMP HOST listo PID MSGID [listo@32473 k="v" ...] MSG`.
pub fn syslog_line(e: &Event, unix_ms: u64, hostname: &str, pid: u32) -> String {
    let pri = FACILITY * 8 + e.severity() as u8;
    let mut sd = format!("[{SD_ID}");
    let mut msg = e.kind().to_string();
    for (k, v) in e.fields() {
        // PARAM-VALUE escapes '"', '\' and ']' (RFC 5424 §6.3.3).
        let esc: String = v
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' | ']' => vec!['\\', c],
                c if c.is_control() => vec![' '],
                c => vec![c],
            })
            .collect();
        sd.push_str(&format!(" {k}=\"{esc}\""));
        msg.push_str(&format!(" {k}={}", v.replace(|c: char| c.is_control(), " ")));
    }
    sd.push(']');
    format!("<{pri}>1 {} {hostname} listo {pid} {} {sd} {msg}", rfc3339(unix_ms), e.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_764_064_800_123), "2025-11-25T10:00:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    /// RFC 5424 §6: `<PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP
    /// STRUCTURED-DATA [SP MSG]`, checked field by field.
    fn assert_rfc5424(line: &str) {
        let rest = line.strip_prefix('<').expect("PRI starts with <");
        let (pri, rest) = rest.split_once('>').expect("PRI ends with >");
        let pri: u8 = pri.parse().expect("PRI is a number");
        assert!(pri <= 191 && pri / 8 == FACILITY);
        let mut parts = rest.splitn(7, ' ');
        assert_eq!(parts.next(), Some("1"), "VERSION");
        let ts = parts.next().unwrap();
        assert!(ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "TIMESTAMP {ts}");
        for (name, max) in [("HOSTNAME", 255), ("APP-NAME", 48), ("PROCID", 128), ("MSGID", 32)] {
            let f = parts.next().unwrap();
            assert!(!f.is_empty() && f.len() <= max && f.bytes().all(|b| (33..=126).contains(&b)), "{name} {f:?}");
        }
        let sd_msg = parts.next().unwrap();
        assert!(sd_msg.starts_with("[listo@32473"), "{sd_msg}");
        // The SD element ends at the first ']' not escaped by a backslash.
        let bytes = sd_msg.as_bytes();
        let mut i = 1;
        let mut end = None;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b']' => {
                    end = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        let end = end.expect("SD element closed");
        let params = &sd_msg[1..end];
        for p in params.split(" ").skip(1).filter(|p| p.contains('=')) {
            let (name, _) = p.split_once('=').unwrap();
            assert!(name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "PARAM-NAME {name}");
        }
        assert!(sd_msg[end + 1..].starts_with(' '), "MSG follows after a space");
    }

    #[test]
    fn one_syslog_line_per_event_kind_has_rfc5424_shape() {
        let all = [
            Event::ChannelInstructed { channel: "ch1".into() },
            Event::ChannelReplaced { channel: "ch1".into() },
            Event::ChannelWithdrawn { channel: "ch1".into() },
            Event::ChannelExpired { channel: "ch1".into() },
            Event::EndpointFailed { channel: "ch1".into(), endpoint: "10.0.0.1:80".into(), reason: "connect \"refused\" ]x".into() },
            Event::EndpointRecovered { endpoint: "[::1]:80".into() },
            Event::Failover { channel: "ch1".into(), from: "10.0.0.1:80".into(), to: "10.0.0.2:80".into() },
            Event::UpstreamFailed { channel: "ch1".into(), path: "/live/a.ts".into(), status: 502, reason: "5xx".into() },
            Event::MemoryPressure { evicted: 3, store_bytes: 1000 },
            Event::RequestRejected { status: 400, reason: "bad\nline".into() },
            Event::NodeDraining,
            Event::RenditionReset { channel: "ch1".into(), playlist: "/live/ch1/v0/index.m3u8".into(), from: 9, to: 1, dropped: 4 },
        ];
        for e in &all {
            let line = syslog_line(e, 1_764_064_800_123, "node-1", 4242);
            assert!(!line.contains('\n'), "one line: {line}");
            assert_rfc5424(&line);
            assert!(line.contains(&format!(" {} [", e.kind())), "MSGID is the kind: {line}");
        }
        let line = syslog_line(&all[4], 0, "h", 1);
        assert!(line.starts_with("<131>1 "), "local0.err: {line}");
        assert!(line.contains(r#"reason="connect \"refused\" \]x""#), "{line}");
    }

    #[test]
    fn ring_numbers_events() {
        let mut log = EventLog::new(EventSink::None);
        log.record(Event::NodeDraining);
        log.record(Event::ChannelWithdrawn { channel: "a".into() });
        let j = log.since_json(1);
        assert_eq!(j["events"].as_array().unwrap().len(), 1);
        assert_eq!(j["events"][0]["kind"], "channel_withdrawn");
        assert_eq!(j["next"], 3);
    }
}
