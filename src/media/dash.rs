//! MPEG-DASH MPDs (ISO/IEC 23009-1): the parts the cache needs.
//!
//! The XML is read with `quick-xml` into a small arena holding only the
//! elements that matter (MPD, Period, AdaptationSet, Representation, BaseURL,
//! SegmentTemplate/List/Base, SegmentTimeline, S, SegmentURL, Initialization);
//! everything else is skipped. Walking the arena afterwards lets inheritance
//! work whatever order the children come in, and uses no recursion.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::{has_scheme, MediaError, PlaylistInfo, PlaylistKind, UriSink};

/// The only attributes kept (by local name); everything else is never decoded.
const ATTRS: [&str; 17] = [
    "type",
    "minimumUpdatePeriod",
    "timeShiftBufferDepth",
    "mediaPresentationDuration",
    "start",
    "duration",
    "id",
    "bandwidth",
    "media",
    "initialization",
    "startNumber",
    "timescale",
    "sourceURL",
    "t",
    "d",
    "r",
    "n",
];

/// Number of [`Tag`] variants.
const N_TAGS: usize = 12;

/// Widest zero-padding honoured in `$Number%0<width>d$` (a u64 has at most 20 digits).
const MAX_PAD: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Mpd,
    Period,
    AdaptationSet,
    Representation,
    BaseUrl,
    SegmentTemplate,
    SegmentTimeline,
    S,
    SegmentList,
    SegmentUrl,
    SegmentBase,
    Initialization,
}

impl Tag {
    /// The tag of element `local` when it sits under `parent` (None: not kept).
    fn child(parent: Option<Tag>, local: &[u8]) -> Option<Tag> {
        use Tag::*;
        let tag = match local {
            b"MPD" => Mpd,
            b"Period" => Period,
            b"AdaptationSet" => AdaptationSet,
            b"Representation" => Representation,
            b"BaseURL" => BaseUrl,
            b"SegmentTemplate" => SegmentTemplate,
            b"SegmentTimeline" => SegmentTimeline,
            b"S" => S,
            b"SegmentList" => SegmentList,
            b"SegmentURL" => SegmentUrl,
            b"SegmentBase" => SegmentBase,
            b"Initialization" => Initialization,
            _ => return None,
        };
        let ok = matches!(
            (parent, tag),
            (None, Mpd)
                | (Some(Mpd), Period | BaseUrl)
                | (
                    Some(Period),
                    BaseUrl | AdaptationSet | SegmentTemplate | SegmentList | SegmentBase
                )
                | (
                    Some(AdaptationSet),
                    BaseUrl | Representation | SegmentTemplate | SegmentList | SegmentBase
                )
                | (
                    Some(Representation),
                    BaseUrl | SegmentTemplate | SegmentList | SegmentBase
                )
                | (Some(SegmentTemplate), SegmentTimeline | Initialization)
                | (
                    Some(SegmentList),
                    SegmentTimeline | Initialization | SegmentUrl
                )
                | (Some(SegmentBase), Initialization)
                | (Some(SegmentTimeline), S)
        );
        ok.then_some(tag)
    }
}

/// Most elements kept from one MPD; further ones are skipped like unknown ones.
const MAX_NODES: usize = 200_000;

/// "No such child" in [`Node::first`].
const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Node {
    tag: Tag,
    /// (index into [`ATTRS`], unescaped value), each name at most once.
    attrs: Vec<(u8, Box<str>)>,
    /// Kept children in document order.
    children: Vec<u32>,
    /// First child of each tag, indexed by `Tag as usize`; [`NONE`] if absent.
    first: [u32; N_TAGS],
    /// Character data (BaseURL only).
    text: String,
}

struct Doc {
    nodes: Vec<Node>,
}

impl Doc {
    fn node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i)
    }

    fn attr(&self, i: usize, name: &str) -> Option<&str> {
        let node = self.node(i)?;
        let idx = ATTRS.iter().position(|n| *n == name)?;
        node.attrs
            .iter()
            .find(|(k, _)| usize::from(*k) == idx)
            .map(|(_, v)| &**v)
    }

    fn num(&self, i: usize, name: &str) -> Option<u64> {
        self.attr(i, name).and_then(|v| v.trim().parse().ok())
    }

    fn child_slice(&self, i: usize) -> &[u32] {
        self.node(i).map_or(&[], |n| n.children.as_slice())
    }

    fn children(&self, i: usize, tag: Tag) -> impl Iterator<Item = usize> + '_ {
        self.child_slice(i)
            .iter()
            .map(|&c| c as usize)
            .filter(move |&c| self.node(c).map(|n| n.tag) == Some(tag))
    }

    fn first_child(&self, i: usize, tag: Tag) -> Option<usize> {
        match self.node(i)?.first.get(tag as usize).copied() {
            Some(c) if c != NONE => Some(c as usize),
            _ => None,
        }
    }

    /// `parent_base` joined with this element's first BaseURL child, if any.
    fn base(&self, i: usize, parent_base: &str) -> String {
        match self.first_child(i, Tag::BaseUrl).and_then(|b| self.node(b)) {
            Some(b) => join_ref(parent_base, b.text.trim()),
            None => parent_base.to_string(),
        }
    }
}

fn xml_err(e: impl std::fmt::Display) -> MediaError {
    let mut s = e.to_string();
    if s.len() > 120 {
        let mut cut = 120;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    MediaError::Malformed(format!("MPD XML: {s}"))
}

fn read_doc(text: &str) -> Result<Doc, MediaError> {
    let mut reader = Reader::from_str(text);
    let mut nodes: Vec<Node> = Vec::new();
    // Open kept elements (at most the depth of MPD/Period/.../S), innermost last.
    let mut stack: Vec<usize> = Vec::new();
    // Depth inside a skipped (unknown, misplaced or over-cap) element; 0 if none.
    let mut skip: usize = 0;
    let mut seen_root = false;

    loop {
        let ev = match reader.read_event() {
            Ok(ev) => ev,
            Err(_) if !seen_root => return Err(MediaError::NotAPlaylist),
            Err(e) => return Err(xml_err(e)),
        };
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_start = matches!(ev, Event::Start(_));
                if skip > 0 {
                    if is_start {
                        skip += 1;
                    }
                    continue;
                }
                let Some(&parent) = stack.last() else {
                    if seen_root {
                        // A second top-level element: not well-formed XML.
                        return Err(MediaError::Malformed("MPD XML: content after root".into()));
                    }
                    seen_root = true;
                    if e.local_name().as_ref() != b"MPD" {
                        return Err(MediaError::NotAPlaylist);
                    }
                    let root = push_node(&mut nodes, Tag::Mpd, e, &reader)?;
                    if !is_start {
                        break; // <MPD/>
                    }
                    stack.push(root);
                    continue;
                };
                let ptag = nodes.get(parent).map(|n| n.tag);
                let tag = Tag::child(ptag, e.local_name().as_ref());
                match tag {
                    Some(tag) if nodes.len() < MAX_NODES => {
                        let idx = push_node(&mut nodes, tag, e, &reader)?;
                        let idx32 = u32::try_from(idx).unwrap_or(NONE);
                        if let Some(p) = nodes.get_mut(parent) {
                            p.children.push(idx32);
                            if let Some(slot) = p.first.get_mut(tag as usize) {
                                if *slot == NONE {
                                    *slot = idx32;
                                }
                            }
                        }
                        if is_start {
                            stack.push(idx);
                        }
                    }
                    _ if is_start => skip = 1,
                    _ => {}
                }
            }
            Event::End(_) => {
                if skip > 0 {
                    skip -= 1;
                } else {
                    stack.pop();
                    if stack.is_empty() {
                        break; // Whatever follows the root is ignored.
                    }
                }
            }
            Event::Text(ref t) => {
                append_text(&mut nodes, &stack, skip, &t.decode().map_err(xml_err)?);
            }
            Event::CData(ref t) => {
                append_text(&mut nodes, &stack, skip, &t.decode().map_err(xml_err)?);
            }
            Event::GeneralRef(ref r) => {
                let s = if r.is_char_ref() {
                    r.resolve_char_ref().map_err(xml_err)?.map(String::from)
                } else {
                    let name = r.decode().map_err(xml_err)?;
                    resolve_predefined_entity(&name).map(str::to_string)
                };
                let s = s.ok_or_else(|| MediaError::Malformed("MPD XML: unknown entity".into()))?;
                append_text(&mut nodes, &stack, skip, &s);
            }
            Event::Eof => {
                if !seen_root {
                    return Err(MediaError::NotAPlaylist);
                }
                return Err(MediaError::Malformed("MPD XML: truncated".into()));
            }
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    Ok(Doc { nodes })
}

fn push_node(
    nodes: &mut Vec<Node>,
    tag: Tag,
    e: &BytesStart<'_>,
    reader: &Reader<&[u8]>,
) -> Result<usize, MediaError> {
    let mut attrs: Vec<(u8, Box<str>)> = Vec::new();
    // quick-xml's duplicate check is quadratic in the attribute count; only
    // the few names in ATTRS are checked here instead.
    for a in e.attributes().with_checks(false) {
        let a = a.map_err(xml_err)?;
        let local = a.key.local_name();
        let Some(idx) = ATTRS.iter().position(|n| n.as_bytes() == local.as_ref()) else {
            continue;
        };
        let idx = u8::try_from(idx).unwrap_or(u8::MAX);
        if attrs.iter().any(|(k, _)| *k == idx) {
            return Err(MediaError::Malformed(format!(
                "MPD XML: duplicate attribute {}",
                String::from_utf8_lossy(local.as_ref())
            )));
        }
        let value = a
            .decode_and_unescape_value(reader.decoder())
            .map_err(xml_err)?;
        attrs.push((idx, value.into()));
    }
    nodes.push(Node {
        tag,
        attrs,
        children: Vec::new(),
        first: [NONE; N_TAGS],
        text: String::new(),
    });
    Ok(nodes.len() - 1)
}

fn append_text(nodes: &mut [Node], stack: &[usize], skip: usize, s: &str) {
    if skip > 0 {
        return;
    }
    if let Some(n) = stack.last().and_then(|&i| nodes.get_mut(i)) {
        if n.tag == Tag::BaseUrl {
            n.text.push_str(s);
        }
    }
}

/// Parses an MPD.
pub(crate) fn parse(body: &[u8]) -> Result<PlaylistInfo, MediaError> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = String::from_utf8_lossy(body);
    let doc = read_doc(&text)?;
    let mpd = 0;

    let ended = doc.attr(mpd, "type").is_none_or(|t| t.trim() == "static");
    let duration_attr = |name: &'static str| -> Result<Option<u64>, MediaError> {
        match doc.attr(mpd, name) {
            None => Ok(None),
            Some(v) => parse_iso_duration_ms(v)
                .map(Some)
                .ok_or_else(|| MediaError::Malformed(format!("bad MPD@{name} {v:.32?}"))),
        }
    };
    let target_duration_ms = duration_attr("minimumUpdatePeriod")?;
    let window_ms = duration_attr("timeShiftBufferDepth")?.unwrap_or(0);
    let presentation_ms = doc
        .attr(mpd, "mediaPresentationDuration")
        .and_then(parse_iso_duration_ms);

    let mut sink = UriSink::default();
    let mpd_base = doc.base(mpd, "");
    'periods: for period in doc.children(mpd, Tag::Period) {
        if !sink.charge(1 + mpd_base.len() / 64) {
            break;
        }
        let period_base = doc.base(period, &mpd_base);
        // Length of the period, for static @duration templates.
        let period_ms = doc
            .attr(period, "duration")
            .and_then(parse_iso_duration_ms)
            .or_else(|| {
                let start = doc
                    .attr(period, "start")
                    .and_then(parse_iso_duration_ms)
                    .unwrap_or(0);
                presentation_ms.map(|p| p.saturating_sub(start))
            });
        for aset in doc.children(period, Tag::AdaptationSet) {
            if !sink.charge(1 + period_base.len() / 64) {
                break 'periods;
            }
            let aset_base = doc.base(aset, &period_base);
            for rep in doc.children(aset, Tag::Representation) {
                // Copying the base costs steps too: many Representations under a
                // huge BaseURL mustn't copy it unboundedly.
                if !sink.charge(1 + aset_base.len() / 64) {
                    break 'periods;
                }
                let rep_base = doc.base(rep, &aset_base);
                let levels = [rep, aset, period];
                let ctx = RepCtx {
                    id: doc.attr(rep, "id").unwrap_or(""),
                    bandwidth: doc.num(rep, "bandwidth").unwrap_or(0),
                    base: &rep_base,
                    is_static: ended,
                    period_ms,
                };
                // The lowest level that says how segments are addressed decides.
                let scheme = levels.iter().find_map(|&l| {
                    [Tag::SegmentTemplate, Tag::SegmentList, Tag::SegmentBase]
                        .into_iter()
                        .find(|&t| doc.first_child(l, t).is_some())
                });
                match scheme {
                    Some(Tag::SegmentTemplate) => {
                        let tpl = Template::merged(&doc, &levels);
                        expand_template(&doc, &tpl, &ctx, &mut sink);
                    }
                    Some(Tag::SegmentList) => list_segments(&doc, &levels, &ctx, &mut sink),
                    _ => {
                        // SegmentBase or nothing (on-demand style): one file, named
                        // by the BaseURL (when that names a file, not a directory).
                        let init = levels
                            .iter()
                            .filter_map(|&l| doc.first_child(l, Tag::SegmentBase))
                            .find_map(|sb| initialization_child(&doc, sb));
                        if let Some(init) = init {
                            sink.push(join_ref(&rep_base, init));
                        }
                        let names_file =
                            scheme.is_some() || doc.first_child(rep, Tag::BaseUrl).is_some();
                        if names_file && !rep_base.is_empty() && !rep_base.ends_with('/') {
                            sink.push(rep_base.clone());
                        }
                    }
                }
            }
        }
    }

    Ok(PlaylistInfo {
        kind: PlaylistKind::Dash,
        target_duration_ms,
        media_sequence: None,
        uris: sink.uris,
        window_ms,
        ended,
    })
}

struct RepCtx<'a> {
    id: &'a str,
    bandwidth: u64,
    base: &'a str,
    is_static: bool,
    period_ms: Option<u64>,
}

/// SegmentTemplate attributes after inheritance (Representation over AdaptationSet over Period).
#[derive(Debug, Default)]
struct Template<'d> {
    media: Option<&'d str>,
    initialization: Option<&'d str>,
    start_number: Option<u64>,
    timescale: Option<u64>,
    duration: Option<u64>,
    timeline: Option<usize>,
}

impl<'d> Template<'d> {
    fn merged(doc: &'d Doc, levels: &[usize]) -> Self {
        let mut t = Template::default();
        for st in levels
            .iter()
            .filter_map(|&l| doc.first_child(l, Tag::SegmentTemplate))
        {
            t.media = t.media.or_else(|| doc.attr(st, "media"));
            t.initialization = t
                .initialization
                .or_else(|| doc.attr(st, "initialization"))
                .or_else(|| initialization_child(doc, st));
            t.start_number = t.start_number.or_else(|| doc.num(st, "startNumber"));
            t.timescale = t.timescale.or_else(|| doc.num(st, "timescale"));
            t.duration = t.duration.or_else(|| doc.num(st, "duration"));
            t.timeline = t
                .timeline
                .or_else(|| doc.first_child(st, Tag::SegmentTimeline));
        }
        t
    }
}

fn initialization_child(doc: &Doc, parent: usize) -> Option<&str> {
    doc.first_child(parent, Tag::Initialization)
        .and_then(|i| doc.attr(i, "sourceURL"))
}

fn expand_template(doc: &Doc, tpl: &Template<'_>, ctx: &RepCtx<'_>, sink: &mut UriSink) {
    let mut start_number = tpl.start_number.unwrap_or(1);
    if let Some(init) = tpl.initialization {
        sink.push(join_ref(
            ctx.base,
            &expand(init, ctx.id, start_number, 0, ctx.bandwidth),
        ));
    }
    let Some(media) = tpl.media else { return };

    if let Some(tl) = tpl.timeline {
        // Only S elements are kept under a SegmentTimeline.
        let ss = doc.child_slice(tl);
        let mut time: u64 = 0;
        for (i, &s) in ss.iter().enumerate() {
            let s = s as usize;
            if !sink.step() {
                return;
            }
            if let Some(t) = doc.num(s, "t") {
                time = t;
            }
            if let Some(n) = doc.num(s, "n") {
                start_number = n;
            }
            let Some(d) = doc.num(s, "d") else { continue };
            let r: i64 = doc
                .attr(s, "r")
                .and_then(|r| r.trim().parse().ok())
                .unwrap_or(0);
            let repeats: u64 = if r >= 0 {
                r.unsigned_abs()
            } else {
                // r < 0: repeat up to the next S@t. Without one, the end is "now"
                // (or the period end), which a parser without a clock can't know:
                // list just this one segment.
                match ss.get(i + 1).and_then(|&next| doc.num(next as usize, "t")) {
                    Some(next_t) if d > 0 && next_t > time => (next_t - time).div_ceil(d) - 1,
                    _ => 0,
                }
            };
            let mut k: u64 = 0;
            loop {
                // Each pass either adds a URI or stops: bounded by the sink's caps.
                if !sink.push(join_ref(
                    ctx.base,
                    &expand(media, ctx.id, start_number, time, ctx.bandwidth),
                )) {
                    return;
                }
                start_number = start_number.saturating_add(1);
                time = time.saturating_add(d);
                if k >= repeats {
                    break;
                }
                k += 1;
            }
        }
    } else if let (Some(dur), true, Some(total_ms)) = (tpl.duration, ctx.is_static, ctx.period_ms) {
        // Number-based template in a static MPD: every segment of the period.
        // (In a dynamic MPD the live edge depends on the wall clock: init only.)
        if dur == 0 {
            return;
        }
        let timescale = u128::from(tpl.timescale.unwrap_or(1).max(1));
        let count = (u128::from(total_ms) * timescale).div_ceil(u128::from(dur) * 1000);
        let mut k: u128 = 0;
        while k < count {
            let number = start_number.saturating_add(u64::try_from(k).unwrap_or(u64::MAX));
            let time = u64::try_from(k * u128::from(dur)).unwrap_or(u64::MAX);
            if !sink.push(join_ref(
                ctx.base,
                &expand(media, ctx.id, number, time, ctx.bandwidth),
            )) {
                return;
            }
            k += 1;
        }
    }
}

fn list_segments(doc: &Doc, levels: &[usize], ctx: &RepCtx<'_>, sink: &mut UriSink) {
    let lists: Vec<usize> = levels
        .iter()
        .filter_map(|&l| doc.first_child(l, Tag::SegmentList))
        .collect();
    // Initialization and SegmentURLs are each inherited from the lowest list that has them.
    if let Some(init) = lists.iter().find_map(|&sl| initialization_child(doc, sl)) {
        sink.push(join_ref(ctx.base, init));
    }
    if let Some(&sl) = lists
        .iter()
        .find(|&&sl| doc.first_child(sl, Tag::SegmentUrl).is_some())
    {
        for su in doc.children(sl, Tag::SegmentUrl) {
            if !sink.step() {
                return;
            }
            let media = doc.attr(su, "media").unwrap_or("");
            // No @media: the segment is (a byte range of) the BaseURL itself.
            if !sink.push(join_ref(ctx.base, media)) {
                return;
            }
        }
    }
}

/// Expands a SegmentTemplate string: $RepresentationID$, $Number$, $Time$,
/// $Bandwidth$ (each with an optional `%0<width>d` format tag) and $$.
/// Unknown or broken identifiers are left as written.
fn expand(tpl: &str, id: &str, number: u64, time: u64, bandwidth: u64) -> String {
    let mut out = String::with_capacity(tpl.len() + 16);
    let mut rest = tpl;
    while let Some(open) = rest.find('$') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('$') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let ident = &after[..close];
        rest = &after[close + 1..];
        if ident.is_empty() {
            out.push('$');
            continue;
        }
        let (name, fmt) = match ident.split_once('%') {
            Some((n, f)) => (n, Some(f)),
            None => (ident, None),
        };
        let value = match name {
            "RepresentationID" if fmt.is_none() => {
                out.push_str(id);
                continue;
            }
            "Number" => number,
            "Time" => time,
            "Bandwidth" => bandwidth,
            _ => {
                out.push('$');
                out.push_str(ident);
                out.push('$');
                continue;
            }
        };
        let width = match fmt {
            None => Some(0),
            Some(f) => f
                .strip_suffix('d')
                .map(|w| w.strip_prefix('0').unwrap_or(w))
                .and_then(|w| {
                    if w.is_empty() {
                        Some(0)
                    } else {
                        w.parse::<usize>().ok()
                    }
                }),
        };
        match width {
            Some(w) => {
                let digits = value.to_string();
                for _ in digits.len()..w.min(MAX_PAD) {
                    out.push('0');
                }
                out.push_str(&digits);
            }
            None => {
                out.push('$');
                out.push_str(ident);
                out.push('$');
            }
        }
    }
    out.push_str(rest);
    out
}

/// RFC 3986 §5.2 merge of reference `rel` onto base reference `base`, both
/// possibly relative to the MPD itself (empty base). Dot segments are kept;
/// [`super::resolve`] removes them later.
fn join_ref(base: &str, rel: &str) -> String {
    if base.is_empty() || has_scheme(rel) || rel.starts_with("//") {
        return rel.to_string();
    }
    if rel.is_empty() {
        return base.to_string();
    }
    let base_nq = base.split(['?', '#']).next().unwrap_or("");
    // Where the path of `base` starts (after "scheme://authority", if any).
    let path_start = if has_scheme(base_nq) || base_nq.starts_with("//") {
        let after_scheme = base_nq.find("//").map_or(0, |i| i + 2);
        base_nq[after_scheme..]
            .find('/')
            .map_or(base_nq.len(), |i| after_scheme + i)
    } else {
        0
    };
    let (origin, path) = base_nq.split_at(path_start);
    if rel.starts_with('/') {
        return format!("{origin}{rel}");
    }
    if rel.starts_with('?') {
        return format!("{base_nq}{rel}");
    }
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None if !origin.is_empty() => "/",
        None => "",
    };
    format!("{origin}{dir}{rel}")
}

/// Parses an xs:duration / ISO 8601 duration ("PT2S", "PT1M30.5S", "P1DT2H") into milliseconds; None if invalid or negative.
///
/// Years count as 365 days and months as 30 days (an MPD's durations rarely
/// use either). A decimal fraction ('.' or ',') is accepted on any component;
/// milliseconds are rounded to nearest; huge values saturate at `u64::MAX`.
pub fn parse_iso_duration_ms(s: &str) -> Option<u64> {
    const SEC: u128 = 1000;
    const DAY: u128 = 86_400 * SEC;
    let s = s.trim();
    let rest = s.strip_prefix('P')?;
    let (date, time) = match rest.split_once('T') {
        Some((d, t)) => {
            if t.is_empty() {
                return None;
            }
            (d, Some(t))
        }
        None => (rest, None),
    };
    let mut total: u128 = 0;
    let mut any = false;
    for (part, units) in [
        (
            date,
            &[
                ('Y', 365 * DAY),
                ('M', 30 * DAY),
                ('W', 7 * DAY),
                ('D', DAY),
            ][..],
        ),
        (
            time.unwrap_or(""),
            &[('H', 3600 * SEC), ('M', 60 * SEC), ('S', SEC)][..],
        ),
    ] {
        let mut rest = part;
        let mut next_unit = 0;
        while !rest.is_empty() {
            let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))?;
            let (num, tail) = rest.split_at(end);
            let designator = tail.chars().next()?;
            let pos = units
                .iter()
                .skip(next_unit)
                .position(|&(u, _)| u == designator)?
                + next_unit;
            next_unit = pos + 1;
            let unit_ms = units.get(pos)?.1;
            total = total.saturating_add(scaled(num, unit_ms)?);
            any = true;
            rest = &tail[designator.len_utf8()..];
        }
    }
    if !any {
        return None;
    }
    Some(u64::try_from(total).unwrap_or(u64::MAX))
}

/// `num` (digits with an optional fraction) times `unit_ms`, rounded to nearest.
fn scaled(num: &str, unit_ms: u128) -> Option<u128> {
    let (int, frac) = match num.split_once(['.', ',']) {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut v: u128 = 0;
    for b in int.bytes() {
        v = v.saturating_mul(10).saturating_add(u128::from(b - b'0'));
    }
    let mut f: u128 = 0;
    let mut den: u128 = 1;
    for b in frac.bytes().take(18) {
        f = f * 10 + u128::from(b - b'0');
        den *= 10;
    }
    Some(
        v.saturating_mul(unit_ms)
            .saturating_add((f * unit_ms * 2 + den) / (2 * den)),
    )
}

#[cfg(test)]
mod tests {
    use super::super::{parse_playlist, MediaError, PlaylistKind, MAX_URIS, MAX_URI_BYTES};
    use super::*;
    use proptest::prelude::*;

    const FIXTURE: &[u8] = include_bytes!("../../tests/fixtures/manifest.mpd");

    fn parse_str(s: &str) -> Result<PlaylistInfo, MediaError> {
        parse_playlist("/d/manifest.mpd", s.as_bytes())
    }

    #[test]
    fn ffmpeg_live_fixture() {
        let info = parse_playlist("/d/manifest.mpd", FIXTURE).unwrap();
        assert_eq!(info.kind, PlaylistKind::Dash);
        assert_eq!(info.target_duration_ms, Some(2000));
        assert_eq!(info.media_sequence, None);
        assert_eq!(info.window_ms, 8000);
        assert!(!info.ended);
        // startNumber=2, one S with r=3: numbers 2..=5 per representation.
        assert_eq!(
            info.uris,
            vec![
                "init-stream0.m4s",
                "chunk-stream0-00002.m4s",
                "chunk-stream0-00003.m4s",
                "chunk-stream0-00004.m4s",
                "chunk-stream0-00005.m4s",
                "init-stream1.m4s",
                "chunk-stream1-00002.m4s",
                "chunk-stream1-00003.m4s",
                "chunk-stream1-00004.m4s",
                "chunk-stream1-00005.m4s",
            ]
        );
    }

    #[test]
    fn inheritance_time_bandwidth_and_base_urls() {
        let mpd = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT1M30.5S" timeShiftBufferDepth="PT30S">
  <BaseURL>http://cdn.example/live/</BaseURL>
  <Period id="p0">
    <BaseURL>../p0/</BaseURL>
    <AdaptationSet mimeType="video/mp4">
      <SegmentTemplate timescale="90000" media="$RepresentationID$/$Bandwidth$/t$Time$.m4s" initialization="$RepresentationID$/init.mp4">
        <SegmentTimeline>
          <S t="900000" d="180000" r="1"/>
          <S d="90000"/>
        </SegmentTimeline>
      </SegmentTemplate>
      <Representation id="v1" bandwidth="500000"/>
      <Representation id="v2" bandwidth="900000">
        <SegmentTemplate media="$RepresentationID$/n$Number%03d$$$.m4s" startNumber="7"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;
        let info = parse_str(mpd).unwrap();
        assert_eq!(info.target_duration_ms, Some(90_500));
        assert_eq!(info.window_ms, 30_000);
        assert!(!info.ended);
        let b = "http://cdn.example/live/../p0/";
        let want: Vec<String> = [
            "v1/init.mp4",
            "v1/500000/t900000.m4s",
            "v1/500000/t1080000.m4s",
            "v1/500000/t1260000.m4s",
            "v2/init.mp4",
            "v2/n007$.m4s",
            "v2/n008$.m4s",
            "v2/n009$.m4s",
        ]
        .iter()
        .map(|u| format!("{b}{u}"))
        .collect();
        assert_eq!(info.uris, want);
    }

    #[test]
    fn relative_base_urls_and_segment_list() {
        let mpd = r#"<MPD type="static" mediaPresentationDuration="PT6S"><Period>
  <BaseURL>media/</BaseURL>
  <AdaptationSet><BaseURL>audio/x.mpd?ignored</BaseURL>
    <Representation id="a" bandwidth="1">
      <BaseURL>en/</BaseURL>
      <SegmentList duration="2">
        <Initialization sourceURL="init.mp4"/>
        <SegmentURL media="s1.m4s"/><SegmentURL media="/abs/s2.m4s"/><SegmentURL media="s3.m4s?x=1&amp;y=2"/>
      </SegmentList>
    </Representation>
    <Representation id="b"><BaseURL>file&#x2d;b.mp4</BaseURL><SegmentBase><Initialization sourceURL="hdr.mp4"/></SegmentBase></Representation>
  </AdaptationSet></Period></MPD>"#;
        let info = parse_str(mpd).unwrap();
        assert!(info.ended);
        assert_eq!(info.target_duration_ms, None);
        assert_eq!(info.window_ms, 0);
        assert_eq!(
            info.uris,
            vec![
                "media/audio/en/init.mp4",
                "media/audio/en/s1.m4s",
                "/abs/s2.m4s",
                "media/audio/en/s3.m4s?x=1&y=2",
                "media/audio/hdr.mp4",
                "media/audio/file-b.mp4",
            ]
        );
    }

    #[test]
    fn static_duration_template() {
        let mpd = r#"<MPD type="static" mediaPresentationDuration="PT9.5S"><Period>
  <AdaptationSet><SegmentTemplate timescale="1000" duration="4000" startNumber="0" media="s$Number$.m4s" initialization="i.m4s"/>
    <Representation id="r"/></AdaptationSet></Period></MPD>"#;
        let info = parse_str(mpd).unwrap();
        assert_eq!(info.uris, vec!["i.m4s", "s0.m4s", "s1.m4s", "s2.m4s"]);
        // Dynamic: the live edge needs a clock, so only the init segment.
        let info = parse_str(&mpd.replace("type=\"static\"", "type=\"dynamic\"")).unwrap();
        assert_eq!(info.uris, vec!["i.m4s"]);
    }

    #[test]
    fn negative_repeat_is_bounded() {
        let tpl = |tl: &str| {
            format!(
                r#"<MPD type="dynamic"><Period><AdaptationSet><Representation id="r">
<SegmentTemplate media="$Time$.m4s"><SegmentTimeline>{tl}</SegmentTimeline></SegmentTemplate>
</Representation></AdaptationSet></Period></MPD>"#
            )
        };
        // r=-1 up to the next S@t: 0, 10, 20, then 35.
        let info = parse_str(&tpl(r#"<S t="0" d="10" r="-1"/><S t="30" d="5"/>"#)).unwrap();
        assert_eq!(info.uris, vec!["0.m4s", "10.m4s", "20.m4s", "30.m4s"]);
        // r=-1 at the end: just one segment; d=0 with r=-1 doesn't loop.
        let info = parse_str(&tpl(r#"<S t="0" d="10" r="-1"/>"#)).unwrap();
        assert_eq!(info.uris, vec!["0.m4s"]);
        let info = parse_str(&tpl(r#"<S t="0" d="0" r="-1"/><S t="30" d="5"/>"#)).unwrap();
        assert_eq!(info.uris, vec!["0.m4s", "30.m4s"]);
        // Huge repeat counts stop at the cap.
        let info = parse_str(&tpl(
            r#"<S t="0" d="1" r="9223372036854775807"/><S d="1" r="99999999"/>"#,
        ))
        .unwrap();
        assert_eq!(info.uris.len(), MAX_URIS);
        let info = parse_str(&tpl(
            r#"<S t="18446744073709551615" d="18446744073709551615" r="3"/>"#,
        ))
        .unwrap();
        assert_eq!(info.uris.len(), 4);
    }

    #[test]
    fn uri_bytes_are_capped() {
        let long = "x".repeat(4096);
        let mpd = format!(
            r#"<MPD type="dynamic"><Period><AdaptationSet><Representation id="{long}">
<SegmentTemplate media="$RepresentationID$$RepresentationID$$Number%099999999999d$"><SegmentTimeline><S d="1" r="100000"/></SegmentTimeline></SegmentTemplate>
</Representation></AdaptationSet></Period></MPD>"#
        );
        let info = parse_str(&mpd).unwrap();
        let total: usize = info.uris.iter().map(String::len).sum();
        assert!(total <= MAX_URI_BYTES);
        assert!(info.uris.len() < MAX_URIS);
        // Width is capped too.
        assert_eq!(info.uris[0].len(), 2 * 4096 + MAX_PAD);
    }

    #[test]
    fn template_expansion() {
        assert_eq!(expand("a$Number$b", "r", 7, 0, 0), "a7b");
        assert_eq!(expand("$Number%05d$", "r", 7, 0, 0), "00007");
        assert_eq!(expand("$Number%5d$", "r", 7, 0, 0), "00007");
        assert_eq!(expand("$Number%02d$", "r", 12345, 0, 0), "12345");
        assert_eq!(
            expand("$Time$-$Bandwidth%08d$", "r", 0, 99, 64000),
            "99-00064000"
        );
        assert_eq!(expand("$RepresentationID$/$$$$", "v1", 0, 0, 0), "v1/$$");
        assert_eq!(
            expand("$Unknown$-$Number%x$-$Number", "r", 3, 0, 0),
            "$Unknown$-$Number%x$-$Number"
        );
        assert_eq!(expand("$", "r", 3, 0, 0), "$");
        assert_eq!(expand("", "r", 3, 0, 0), "");
        assert_eq!(expand("é$Number$ü", "r", 3, 0, 0), "é3ü");
    }

    #[test]
    fn base_joining() {
        assert_eq!(join_ref("", "a.m4s"), "a.m4s");
        assert_eq!(join_ref("v/", "a.m4s"), "v/a.m4s");
        assert_eq!(join_ref("v/x.mp4", "a.m4s"), "v/a.m4s");
        assert_eq!(join_ref("v/", "/a.m4s"), "/a.m4s");
        assert_eq!(join_ref("http://h", "a.m4s"), "http://h/a.m4s");
        assert_eq!(join_ref("http://h/p/q?x=/y/", "a"), "http://h/p/a");
        assert_eq!(join_ref("http://h/p/", "/a"), "http://h/a");
        assert_eq!(join_ref("v/", "https://o/a"), "https://o/a");
        assert_eq!(join_ref("v/", "//o/a"), "//o/a");
        assert_eq!(join_ref("v/", ""), "v/");
    }

    #[test]
    fn directory_base_is_not_a_segment() {
        let mpd = r#"<MPD><BaseURL>http://cdn/v/</BaseURL><Period><AdaptationSet>
<Representation id="a"/><Representation id="b"><BaseURL>b/</BaseURL></Representation>
<Representation id="c"><BaseURL>c.mp4</BaseURL></Representation></AdaptationSet></Period></MPD>"#;
        assert_eq!(parse_str(mpd).unwrap().uris, vec!["http://cdn/v/c.mp4"]);
    }

    #[test]
    fn errors_not_panics() {
        assert_eq!(
            parse_str("<html><head/></html>"),
            Err(MediaError::NotAPlaylist)
        );
        assert_eq!(parse_str("<<<>>>"), Err(MediaError::NotAPlaylist));
        assert_eq!(
            parse_str("<?xml version=\"1.0\"?>"),
            Err(MediaError::NotAPlaylist)
        );
        assert!(matches!(
            parse_str("<MPD type=\"dynamic\"><Period>"),
            Err(MediaError::Malformed(_))
        ));
        assert!(matches!(
            parse_str("<MPD><Period></AdaptationSet></MPD>"),
            Err(MediaError::Malformed(_))
        ));
        assert!(matches!(
            parse_str("<MPD minimumUpdatePeriod=\"2s\"/>"),
            Err(MediaError::Malformed(_))
        ));
        assert!(matches!(
            parse_str("<MPD type=\"static\" type=\"dynamic\"/>"),
            Err(MediaError::Malformed(_))
        ));
        // Attributes that are never read aren't checked.
        assert!(parse_str("<MPD a=\"1\" a=\"2\"/>").is_ok());
        assert!(matches!(
            parse_str("<MPD><BaseURL>&bogus;</BaseURL></MPD>"),
            Err(MediaError::Malformed(_))
        ));
        // A truncated fixture is malformed, never a partial success.
        let cut = &FIXTURE[..FIXTURE.len() / 2];
        assert!(matches!(
            parse_playlist("/d/manifest.mpd", cut),
            Err(MediaError::Malformed(_))
        ));
        // Empty MPD and prefixed element names.
        let info = parse_str("<MPD/>").unwrap();
        assert!(info.ended && info.uris.is_empty());
        let info = parse_str(
            r#"<m:MPD xmlns:m="urn:mpeg:dash:schema:mpd:2011" type="dynamic"><m:Period><m:AdaptationSet><m:Representation id="1"><m:BaseURL>x.mp4</m:BaseURL></m:Representation></m:AdaptationSet></m:Period></m:MPD> trailing junk"#,
        )
        .unwrap();
        assert_eq!(info.uris, vec!["x.mp4"]);
        // Deep nesting of unknown elements is skipped without recursion.
        let deep = format!(
            "<MPD>{}{}</MPD>",
            "<x>".repeat(100_000),
            "</x>".repeat(100_000)
        );
        assert!(parse_str(&deep).is_ok());
    }

    /// Random well-nested MPD-shaped documents from the vocabulary this parser cares about.
    fn arb_mpd() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("Period"),
            Just("AdaptationSet"),
            Just("Representation"),
            Just("BaseURL"),
            Just("SegmentTemplate"),
            Just("SegmentTimeline"),
            Just("S"),
            Just("SegmentList"),
            Just("SegmentURL"),
            Just("SegmentBase"),
            Just("Initialization"),
            Just("X"),
        ];
        let attr = (
            proptest::sample::select(&ATTRS[..]),
            prop_oneof![
                Just("-1".to_string()),
                Just("0".to_string()),
                Just("18446744073709551615".to_string()),
                Just("PT2S".to_string()),
                Just("$Number%05d$/$Time$/$RepresentationID$$$.m4s".to_string()),
                Just("static".to_string()),
                "[0-9]{1,4}",
                "[a-z$%0-9./]{0,12}",
            ],
        );
        let elem = (name, proptest::collection::vec(attr, 0..4), "[a-z/.]{0,6}");
        proptest::collection::vec((elem, 0u8..3), 0..40).prop_map(|items| {
            // 0: open, 1: empty, 2: close the innermost open element.
            let mut out = String::from("<MPD type=\"dynamic\" timeShiftBufferDepth=\"PT8S\">");
            let mut open: Vec<&str> = Vec::new();
            for ((name, attrs, text), op) in items {
                if op == 2 {
                    if let Some(n) = open.pop() {
                        out.push_str(&format!("</{n}>"));
                    }
                    continue;
                }
                out.push('<');
                out.push_str(name);
                let mut seen = Vec::new();
                for (k, v) in attrs {
                    if !seen.contains(&k) {
                        seen.push(k);
                        out.push_str(&format!(" {k}=\"{v}\""));
                    }
                }
                if op == 1 {
                    out.push_str("/>");
                } else {
                    out.push('>');
                    out.push_str(&text);
                    open.push(name);
                }
            }
            while let Some(n) = open.pop() {
                out.push_str(&format!("</{n}>"));
            }
            out.push_str("</MPD>");
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn structured_mpds_parse(mpd in arb_mpd()) {
            let info = parse_str(&mpd);
            prop_assert!(info.is_ok(), "{mpd}: {info:?}");
            if let Ok(info) = info {
                prop_assert_eq!(info.window_ms, 8000);
                prop_assert!(info.uris.len() <= MAX_URIS);
            }
        }
    }

    #[test]
    fn iso_durations() {
        assert_eq!(parse_iso_duration_ms("PT2S"), Some(2000));
        assert_eq!(parse_iso_duration_ms("PT8.0S"), Some(8000));
        assert_eq!(parse_iso_duration_ms("PT1M30.5S"), Some(90_500));
        assert_eq!(parse_iso_duration_ms("P1DT2H"), Some(93_600_000));
        assert_eq!(parse_iso_duration_ms("PT0.0005S"), Some(1));
        assert_eq!(parse_iso_duration_ms("PT0.0004S"), Some(0));
        assert_eq!(parse_iso_duration_ms("PT1.9999S"), Some(2000));
        assert_eq!(parse_iso_duration_ms("PT0,5S"), Some(500));
        assert_eq!(parse_iso_duration_ms(" PT1H2M3S "), Some(3_723_000));
        assert_eq!(parse_iso_duration_ms("P1W"), Some(604_800_000));
        assert_eq!(
            parse_iso_duration_ms("P1Y2M"),
            Some((365 + 60) * 86_400_000)
        );
        assert_eq!(parse_iso_duration_ms("P0D"), Some(0));
        assert_eq!(parse_iso_duration_ms("PT0S"), Some(0));
        assert_eq!(parse_iso_duration_ms("PT1.5M"), Some(90_000));
        assert_eq!(
            parse_iso_duration_ms("PT99999999999999999999999999999999999999999H"),
            Some(u64::MAX)
        );
        for bad in [
            "", "P", "PT", "2S", "T2S", "-PT2S", "PT2", "PTS", "PT.5S", "PT2S3M", "PT1H1H", "P1S",
            "PT1D", "P1DT", "pt2s", "PT2SX", "PT1..2S", "PT1.2.3S", "P1M2Y", "PT–2S",
        ] {
            assert_eq!(parse_iso_duration_ms(bad), None, "{bad:?}");
        }
    }
}
