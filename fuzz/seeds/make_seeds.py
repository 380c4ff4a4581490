#!/usr/bin/env python3
"""Writes the committed seed corpora: fuzz/corpus/<target>/seed-*.

Run from anywhere: python3 fuzz/seeds/make_seeds.py. Inputs come from tests/fixtures and the
shapes below; the formats are described in fuzz/src/targets.rs.
"""
import json, os, random

FUZZ = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(FUZZ)
FIX = os.path.join(ROOT, "tests", "fixtures")


def fixture(name):
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()


def write(target, name, data):
    d = os.path.join(FUZZ, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def framed(flags, deltas, payload):
    """flags byte, split count, split deltas, payload (viewer_stream / upstream_stream)."""
    assert len(deltas) < 32
    return bytes([flags, len(deltas)]) + bytes(deltas) + payload


# --- viewer_stream --------------------------------------------------------------------------
H = b"Host: node\r\n"
requests = {
    "get-playlist": b"GET /live/ch1/index.m3u8 HTTP/1.1\r\n" + H + b"\r\n",
    "get-segment": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"User-Agent: player\r\nAccept: */*\r\n\r\n",
    "pipeline": b"GET /live/ch1/index.m3u8 HTTP/1.1\r\n" + H + b"\r\nHEAD /live/ch1/seg_1.ts?x=1 HTTP/1.1\r\n" + H
    + b"Range: bytes=0-9\r\n\r\nGET /live/ch1/seg_2.ts HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
    "range": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"Range: bytes=5-20\r\n\r\nGET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"Range: bytes=-4\r\n\r\n",
    "range-416": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"Range: bytes=99999-\r\n\r\n",
    "conditional": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"\r\nGET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b'If-None-Match: "v1"\r\n\r\n'
    + b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"If-Modified-Since: Tue, 25 Nov 2025 09:00:00 GMT\r\n\r\n",
    "preflight": b"OPTIONS /live/ch1/index.m3u8 HTTP/1.1\r\n" + H + b"Origin: http://p.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\n\r\n",
    "http10": b"GET /live/ch1/seg_1.ts HTTP/1.0\r\n\r\n",
    "http10-keepalive": b"GET /live/ch1/seg_1.ts HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /live/ch1/index.m3u8 HTTP/1.0\r\n\r\n",
    "unknown-channel": b"GET /vod/movie.mp4 HTTP/1.1\r\n" + H + b"\r\n",
    "absolute-form": b"GET http://evil.example/live/ch1/seg_1.ts HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    "authority-form": b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    "dotdot": b"GET /live/ch1/../../etc/passwd HTTP/1.1\r\n" + H + b"\r\n",
    "pct-dot": b"GET /live/ch1/%2e%2e/%2E%2E/x HTTP/1.1\r\n" + H + b"\r\n",
    "cl-te": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "dup-cl": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
    "obs-fold": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n",
    "bare-lf": b"GET /live/ch1/seg_1.ts HTTP/1.1\n" + b"Host: node\n\nGET /live/ch1/index.m3u8 HTTP/1.1\nHost: node\n\n",
    "nul": b"GET /live/ch1/seg\x00_1.ts HTTP/1.1\r\n" + H + b"\r\n",
    "bad-method": b"DELETE /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"\r\nPOST / HTTP/1.1\r\n" + H + b"\r\n",
    "two-hosts": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "http2": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "version-505": b"GET /live/ch1/seg_1.ts HTTP/1.2\r\n" + H + b"\r\n",
    "big-head": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "long-uri": b"GET /live/ch1/" + b"a" * 5000 + b" HTTP/1.1\r\n" + H + b"\r\n",
    "leading-crlf": b"\r\n\r\nGET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"\r\n",
    "query": b"GET /live/ch1/seg_1.ts?b=2&a=1 HTTP/1.1\r\n" + H + b"\r\nGET /live/ch1/seg_1.ts?a=1&b=2 HTTP/1.1\r\n" + H + b"\r\n",
    "slowloris": b"GET /live/ch1/seg_1.ts HTTP/1.1\r\n" + H + b"X-A: 1\r\n",
}
for i, (name, req) in enumerate(sorted(requests.items())):
    flags = [0x00, 0x04, 0x05, 0x06, 0x07, 0x14, 0x24, 0x34, 0x0c, 0x44][i % 10]
    write("viewer_stream", name, framed(flags, [], req))
    write("viewer_stream", name + "-split", framed(flags ^ 0x04, [1, 7, 16, 3], req))

# --- upstream_stream ------------------------------------------------------------------------
m3u8 = fixture("index.m3u8")
mpd = fixture("manifest.mpd")


def cl(body, extra=b""):
    return b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def chunked(body, piece, extra=b""):
    out = b"HTTP/1.1 200 OK\r\n" + extra + b"Transfer-Encoding: chunked\r\n\r\n"
    for i in range(0, len(body), piece):
        c = body[i:i + piece]
        out += b"%x\r\n" % len(c) + c + b"\r\n"
    return out + b"0\r\n\r\n"


seg = bytes(range(256)) * 2
responses = {
    "cl": (0x01, cl(seg)),
    "cl-playlist": (0x05, cl(m3u8, b"Cache-Control: max-age=1\r\n")),
    "chunked": (0x02, chunked(seg, 100)),
    "chunked-mpd": (0x06, chunked(mpd, 700)),
    "chunked-ext-trailer": (0x01, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"),
    "continue": (0x12, b"HTTP/1.1 100 Continue\r\n\r\n" + cl(seg[:50])),
    "until-close": (0x0a, b"HTTP/1.0 200 OK\r\n\r\n" + seg[:300]),
    "status-500": (0x02, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nbad"),
    "status-404": (0x03, b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnone"),
    "status-304": (0x01, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
    "truncated-cl": (0x0a, cl(seg)[:-100]),
    "truncated-chunked": (0x0a, chunked(seg, 64)[:-30]),
    "longer-than-cl": (0x02, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789EXTRA BYTES"),
    "cl-and-te": (0x02, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    "bad-chunk-size": (0x0a, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n"),
    "dup-cl": (0x02, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
    "no-store": (0x32, cl(seg[:64], b"Cache-Control: no-store\r\n")),
    "gzip-te": (0x02, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx"),
    "switching": (0x01, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
    "stall-after-head": (0x52, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + seg[:10]),
    "range-late-viewer": (0xd2, cl(seg)),
}
for name, (flags, resp) in sorted(responses.items()):
    write("upstream_stream", name, framed(flags, [], resp))
    write("upstream_stream", name + "-split", framed(flags, [3, 17, 1, 40, 9], resp))

# --- playlist -------------------------------------------------------------------------------
write("playlist", "hls", b"\x00" + m3u8)
write("playlist", "dash", b"\x01" + mpd)
write("playlist", "hls-master", b"\x00#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000\nlow/index.m3u8\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",URI=\"audio/index.m3u8\"\n#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI=\"iframe.m3u8\"\n")
write("playlist", "hls-ll", b"\x04#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PART:DURATION=1.0,URI=\"p1.mp4\"\n#EXTINF:4.0,\n../up/seg.mp4?x=1\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p2.mp4\"\n#EXT-X-ENDLIST\n")
write("playlist", "hls-hostile", b"\x00#EXTM3U\n#EXTINF:2,\nhttp://evil.example/x.ts\n#EXTINF:2,\n//evil.example/y.ts\n#EXTINF:2,\n../../../../etc/passwd\n#EXTINF:2,\n%2e%2e/%2E%2E/z.ts\n#EXTINF:2,\na b\\c\"d.ts\n")
write("playlist", "dash-list", b"\x01<?xml version=\"1.0\"?><MPD type=\"static\" mediaPresentationDuration=\"PT10S\"><BaseURL>media/</BaseURL><Period><AdaptationSet><Representation id=\"v\" bandwidth=\"1\"><SegmentList duration=\"2\"><Initialization sourceURL=\"init.mp4\"/><SegmentURL media=\"s1.mp4\"/><SegmentURL media=\"s2.mp4\"/></SegmentList></Representation></AdaptationSet></Period></MPD>")
write("playlist", "dash-template-duration", b"\x01<MPD type=\"static\" mediaPresentationDuration=\"PT1H\"><Period><AdaptationSet><Representation id=\"a\" bandwidth=\"9\"><SegmentTemplate duration=\"2\" timescale=\"1\" media=\"$RepresentationID$/$Number%09d$-$Bandwidth$-$Time$.m4s\" initialization=\"$RepresentationID$/init\" startNumber=\"0\"/></Representation></AdaptationSet></Period></MPD>")
write("playlist", "ambiguous", b"\x02\xef\xbb\xbf  \n")

# --- control_json ---------------------------------------------------------------------------
def j(o):
    return json.dumps(o).encode()

write("control_json", "full", j({"channel": "ch1", "path_prefix": "/live/ch1/", "endpoints": ["127.0.0.1:18080", "[::1]:8080"], "host": "cdn.example", "prefetch": ["/live/ch1/index.m3u8"]}))
write("control_json", "minimal", j({"channel": "ch1", "path_prefix": "/live/ch1/", "endpoints": ["10.0.0.1:80"]}))
write("control_json", "null-host", j({"channel": "a.b-c_d", "path_prefix": "/", "endpoints": ["1.2.3.4:5"], "host": None, "prefetch": []}))
write("control_json", "bad-prefix", j({"channel": "x", "path_prefix": "/live/../", "endpoints": ["1.2.3.4:5"]}))
write("control_json", "bad-endpoint", j({"channel": "x", "path_prefix": "/x/", "endpoints": ["cdn.example:80"]}))
write("control_json", "bad-host", j({"channel": "x", "path_prefix": "/x/", "endpoints": ["1.2.3.4:5"], "host": "a\r\nX: y"}))
write("control_json", "prefetch-outside", j({"channel": "x", "path_prefix": "/x/", "endpoints": ["1.2.3.4:5"], "prefetch": ["/y/a.ts"]}))
write("control_json", "deep", b"[" * 200 + b"]" * 200)
write("control_json", "unicode", '{"channel":"\u00e9","path_prefix":"/\u00e9/","endpoints":["1.2.3.4:5"]}'.encode())

# --- node_api -------------------------------------------------------------------------------
rng = random.Random(1234)
for i in range(24):
    n = rng.choice([16, 64, 128, 256, 512, 1024])
    write("node_api", "random-%02d" % i, bytes(rng.randrange(256) for _ in range(n)))
