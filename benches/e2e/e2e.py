#!/usr/bin/env python3
"""Helpers for benches/e2e/e2e.sh: measurement clients and the report (stdlib only).

Subcommands (each writes one JSON file with --out; e2e.sh starts and stops every server):
  static-origin  a tiny keep-alive HTTP/1.1 file server (Cache-Control: max-age=3600)
  hot            wrk against a hot object + the edge's CPU seconds (/proc utime+stime, whole tree)
  live           N live HLS viewers against an edge, clocked against the origin's publish times
  coalesce       1 leader + W waiters on a cold object the origin trickles (~1.6 s)
  iperf          parse an `iperf3 -J` result
  report         the table (markdown) from every JSON file in a directory

All addresses are 127.0.0.1. Every loop is bounded in time and count.
"""

import argparse
import asyncio
import http.server
import json
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- small utilities


def loadavg():
    with open("/proc/loadavg") as f:
        a = f.read().split()
    return [float(a[0]), float(a[1]), float(a[2])]


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a list; None when empty."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(math.ceil(p / 100.0 * len(v))) - 1))
    return v[k]


def summary_ms(values_s):
    """p50/p99/max/mean/n in milliseconds of a list of seconds."""
    ms = [x * 1000.0 for x in values_s]
    return {
        "p50": pct(ms, 50),
        "p99": pct(ms, 99),
        "max": max(ms) if ms else None,
        "mean": (sum(ms) / len(ms)) if ms else None,
        "n": len(ms),
    }


def tree_pids(root):
    """root and all its descendants (from /proc/*/stat)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        children.setdefault(int(rest[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(root):
    """utime+stime of the process tree under root, in seconds (threads included)."""
    if not root:
        return 0.0
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(root):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rfind(")") + 2:].split()
        total += int(rest[11]) + int(rest[12])  # fields 14 and 15 of stat
    return total / tck


def runq_wait_seconds(root):
    """Time the tree's threads spent runnable but waiting for a CPU (/proc/PID/task/TID/schedstat,
    second field): how much CPU contention, not the edge itself, held it back."""
    if not root:
        return 0.0
    total = 0
    for p in tree_pids(root):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def http_get(port, path, timeout=5.0):
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as r:
        return r.status, r.read()


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")


# --------------------------------------------------------------------------- static origin


def cmd_static_origin(a):
    root = os.path.abspath(a.dir)
    count = {"n": 0}

    class H(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *args, **kw):
            super().__init__(*args, directory=root, **kw)

        def end_headers(self):
            self.send_header("Cache-Control", "max-age=3600")
            super().end_headers()

        def log_message(self, fmt, *args):
            count["n"] += 1
            sys.stderr.write("static-origin: %d %s\n" % (count["n"], fmt % args))
            sys.stderr.flush()

    http.server.ThreadingHTTPServer.daemon_threads = True
    srv = http.server.ThreadingHTTPServer((HOST, a.port), H)
    sys.stderr.write(f"static-origin on {HOST}:{a.port} serving {root}\n")
    sys.stderr.flush()
    srv.serve_forever()


# --------------------------------------------------------------------------- hot object (wrk)

UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
TUNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(text):
    out = {"raw_tail": text.strip().splitlines()[-12:]}
    m = re.search(r"Transfer/sec:\s+([\d.]+)([KMGT]?B)", text)
    if m:
        out["bytes_per_s"] = float(m.group(1)) * UNITS[m.group(2)]
        out["gbps"] = out["bytes_per_s"] * 8 / 1e9
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    for p in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % p, text, re.M)
        if m:
            out[f"p{p}_ms"] = float(m.group(1)) * TUNITS[m.group(2)]
    m = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s|m)\s", text, re.M)
    if m:
        out["max_ms"] = float(m.group(1)) * TUNITS[m.group(2)]
    m = re.search(r"(\d+) requests in ([\d.]+)(s|m)", text)
    if m:
        out["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    out["timeouts"] = int(m.group(4)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    return out


def count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if "static-origin: " in line and '"GET ' in line)
    except OSError:
        return 0


def cmd_hot(a):
    url = f"http://{HOST}:{a.port}{a.path}"
    # Warm: a few sequential fetches; every one must be the whole object.
    sizes = []
    for _ in range(3):
        st, body = http_get(a.port, a.path, timeout=10)
        sizes.append((st, len(body)))
    ok = all(st == 200 and n == a.size for st, n in sizes)
    runs = []
    for i in range(a.runs):
        time.sleep(1.0)
        load = loadavg()
        up0 = count_lines(a.origin_log)
        c0 = cpu_seconds(a.edge_pid)
        q0 = runq_wait_seconds(a.edge_pid)
        perf = None
        if a.perf_out and i == 0:
            perf = subprocess.Popen(
                ["perf", "record", "-F", "499", "-g", "-p", str(a.edge_pid), "-o", a.perf_out, "--", "sleep", str(a.duration)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        r = subprocess.run(wrk_cmd(a, url), capture_output=True, text=True, timeout=a.duration + 60)
        wall = time.monotonic() - t0
        c1 = cpu_seconds(a.edge_pid)
        q1 = runq_wait_seconds(a.edge_pid)
        if perf:
            perf.wait(timeout=60)
        w = parse_wrk(r.stdout)
        w["cpu_s"] = c1 - c0
        w["runq_wait_s"] = q1 - q0
        w["wall_s"] = wall
        if w.get("gbps"):
            # CPU-ms per Gbit moved: cpu seconds / (Gbit/s * seconds).
            w["cpu_ms_per_gbit"] = w["cpu_s"] * 1000.0 / (w["gbps"] * a.duration)
        w["load"] = load
        w["upstream_requests"] = count_lines(a.origin_log) - up0
        w["wrk_rc"] = r.returncode
        runs.append(w)
        print(f"  {a.name} hot run {i + 1}/{a.runs}: {w.get('gbps', 0):.2f} Gbit/s, p50 {fnum(w.get('p50_ms'))} ms, "
              f"p99 {fnum(w.get('p99_ms'))} ms, max {fnum(w.get('max_ms'))} ms, errors {w['socket_errors'] + w['non2xx']}, "
              f"edge CPU {w['cpu_s']:.2f} s (+{w['runq_wait_s']:.2f} s waiting for a CPU), load {load[0]:.2f}", flush=True)
    med = sorted(runs, key=lambda w: w.get("gbps", 0))[len(runs) // 2]
    write_json(a.out, {"edge": a.name, "warm": sizes, "warm_ok": ok, "runs": runs, "median": med,
                       "cmd": " ".join(wrk_cmd(a, url))})


def wrk_cmd(a, url):
    # --timeout 10s: wrk leaves responses slower than its timeout (default 2 s) out of the latency
    # percentiles; with 10 s they are in them (the load is the same).
    return ["wrk", f"-t{a.threads}", f"-c{a.connections}", f"-d{a.duration}s", "--timeout", "10s", "--latency", url]


# --------------------------------------------------------------------------- HTTP/1.1 client (asyncio)


class Resp:
    __slots__ = ("status", "t_send", "t_first", "t_body", "t_done", "length", "body", "error", "close")

    def __init__(self):
        self.status = 0
        self.t_send = self.t_first = self.t_body = self.t_done = None
        self.length = 0
        self.body = None
        self.error = None
        self.close = False


class HttpConn(asyncio.Protocol):
    """One keep-alive connection; one request at a time; Content-Length or chunked bodies."""

    def __init__(self):
        self.transport = None
        self.fut = None
        self.resp = None
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport
        try:
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass

    def connection_lost(self, exc):
        self.lost = True
        if self.fut and not self.fut.done():
            self.resp.error = "closed"
            self.fut.set_result(self.resp)

    def start(self, path, keep_body, ua="listo-e2e"):
        self.resp = Resp()
        self.keep = keep_body
        self.head = b""
        self.in_head = True
        self.remaining = None
        self.chunked = False
        self.cbuf = b""
        self.cleft = 0
        self.parts = [] if keep_body else None
        self.fut = asyncio.get_running_loop().create_future()
        self.resp.t_send = time.monotonic()
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: {ua}\r\n\r\n".encode())
        return self.fut

    def _finish(self):
        r = self.resp
        r.t_done = time.monotonic()
        if self.parts is not None:
            r.body = b"".join(self.parts)
        if not self.fut.done():
            self.fut.set_result(r)

    def _body(self, data, now):
        if not data:
            return
        r = self.resp
        if r.t_body is None:
            r.t_body = now
        r.length += len(data)
        if self.parts is not None:
            self.parts.append(data)

    def data_received(self, data):
        now = time.monotonic()
        if self.fut is None or self.fut.done():
            return
        r = self.resp
        if self.in_head:
            if r.t_first is None:
                r.t_first = now
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                return
            head, data = self.head[:i].decode("latin-1"), self.head[i + 4:]
            self.in_head = False
            lines = head.split("\r\n")
            try:
                r.status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                r.error = "bad status line"
                self.transport.close()
                return
            for line in lines[1:]:
                k, _, v = line.partition(":")
                k, v = k.strip().lower(), v.strip().lower()
                if k == "content-length":
                    self.remaining = int(v)
                elif k == "transfer-encoding" and "chunked" in v:
                    self.chunked = True
                elif k == "connection" and "close" in v:
                    r.close = True
            if not self.chunked and self.remaining is None:
                self.remaining = 0 if r.status in (204, 304) else None
                if self.remaining is None:
                    r.error = "no length"
                    r.close = True
        if self.chunked:
            self._chunked(data, now)
        elif self.remaining is not None:
            take = data[: self.remaining]
            self._body(take, now)
            self.remaining -= len(take)
            if self.remaining == 0:
                self._finish()

    def _chunked(self, data, now):
        buf = self.cbuf + data if self.cbuf else data
        self.cbuf = b""
        pos = 0
        while pos < len(buf):
            if self.cleft > 0:
                take = buf[pos: pos + self.cleft]
                self._body(take, now)
                self.cleft -= len(take)
                pos += len(take)
                if self.cleft == 0:
                    self.cleft = -2  # the CRLF after the chunk
                continue
            if self.cleft < 0:
                n = min(-self.cleft, len(buf) - pos)
                pos += n
                self.cleft += n
                continue
            j = buf.find(b"\r\n", pos)
            if j < 0:
                self.cbuf = buf[pos:]
                return
            size = int(buf[pos:j].split(b";")[0], 16)
            pos = j + 2
            if size == 0:
                # Trailer section: assume none (CRLF follows).
                self._finish()
                return
            self.cleft = size


class Client:
    """A connection that reconnects when the server closed it."""

    def __init__(self, port, ua="listo-e2e"):
        self.port = port
        self.ua = ua
        self.conn = None
        self.connects = 0

    async def ensure(self):
        if self.conn is None or self.conn.lost or self.conn.transport is None or self.conn.transport.is_closing():
            loop = asyncio.get_running_loop()
            _, self.conn = await loop.create_connection(HttpConn, HOST, self.port)
            self.connects += 1

    async def get(self, path, keep_body=False, timeout=10.0):
        try:
            await asyncio.wait_for(self.ensure(), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            r = Resp()
            r.error = f"connect: {e!r}"
            r.t_send = r.t_done = time.monotonic()
            return r
        fut = self.conn.start(path, keep_body, self.ua)
        try:
            r = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            r = self.conn.resp
            r.error = "timeout"
            r.t_done = time.monotonic()
            self.conn.transport.close()
            self.conn = None
            return r
        if r.error or r.close:
            self.conn.transport.close()
            self.conn = None
        return r

    def close(self):
        if self.conn and self.conn.transport:
            self.conn.transport.close()


SEG_RE = re.compile(rb"seg_(\d+)\.ts")


def seg_numbers(body):
    return [int(m.group(1)) for m in SEG_RE.finditer(body or b"")]


# --------------------------------------------------------------------------- origin clock


async def calibrate(origin_port, path, seg_s, conns=12, period=0.024, budget_s=None):
    """When does the origin publish its next segment? Poll `path` straight at the origin from
    `conns` connections on a fixed grid (one send every period/conns seconds; period > the origin's
    --latency-ms) until the newest listed segment changes. The origin builds the playlist before
    its latency sleep, so a request *sent* at t sees the state at ~t.
    Returns (k, t_pub_estimate, half_uncertainty_s, requests_sent)."""
    budget_s = budget_s or seg_s + 1.5
    clients = [Client(origin_port) for _ in range(conns)]
    await asyncio.gather(*(c.ensure() for c in clients))
    obs = []  # (t_send, newest)
    stop = asyncio.Event()
    first = {}
    t0 = time.monotonic() + 0.01

    async def poller(i):
        c = clients[i]
        j = 0
        while not stop.is_set():
            slot = t0 + j * period + i * period / conns
            j += 1
            now = time.monotonic()
            if slot < now:
                continue
            await asyncio.sleep(slot - now)
            r = await c.get(path, keep_body=True, timeout=5)
            if r.status != 200:
                continue
            segs = seg_numbers(r.body)
            if not segs:
                continue
            newest = max(segs)
            obs.append((r.t_send, newest))
            if "k0" not in first:
                first["k0"] = newest
            elif newest > first["k0"]:
                stop.set()

    tasks = [asyncio.create_task(poller(i)) for i in range(conns)]
    try:
        await asyncio.wait_for(stop.wait(), budget_s)
    except asyncio.TimeoutError:
        pass
    stop.set()
    await asyncio.sleep(0.1)
    for t in tasks:
        t.cancel()
    for c in clients:
        c.close()
    k0 = first.get("k0")
    if k0 is None:
        raise RuntimeError("calibration: origin playlist not readable")
    k1 = k0 + 1
    after = [t for t, n in obs if n >= k1]
    if not after:
        raise RuntimeError("calibration: no new segment seen in time")
    hi = min(after)
    lo = max((t for t, n in obs if n <= k0 and t < hi), default=hi - seg_s)
    return k1, (lo + hi) / 2, (hi - lo) / 2, len(obs)


# --------------------------------------------------------------------------- live viewers


async def live_run(a):
    seg_s = a.segment_secs
    # The origin's clock, from channel 1 (the viewers only use channel 0, so per_path of ch0 is
    # untouched by the calibration).
    kc, tc, unc, ncal = await calibrate(a.origin_port, "/live/ch1/v0/index.m3u8", seg_s)

    def t_pub(k):
        return tc + (k - kc) * seg_s

    loop_start = time.monotonic()
    t_meas0 = loop_start + a.warm
    t_meas1 = t_meas0 + a.measure
    t_end = t_meas1 + a.tail
    n = a.viewers
    seg_recs = []   # (viewer, r, k, t_send, t_first, t_body, t_done, status, length, error, t_seen)
    pl_recs = []    # (t_send, t_first, t_done, status, error)
    connects = []
    snaps = {}
    load0 = loadavg()

    async def viewer(i):
        # One User-Agent per viewer: LISTO counts sessions by (address, User-Agent).
        c = Client(a.port, ua=f"listo-e2e-viewer/{i}")
        r = i % a.renditions
        path = f"/live/ch0/v{r}/index.m3u8"
        nxt = loop_start + a.poll_ms / 1000.0 * i / n
        last = None
        while True:
            now = time.monotonic()
            if now >= t_end:
                break
            if nxt > now:
                await asyncio.sleep(nxt - now)
            pr = await c.get(path, keep_body=True, timeout=a.timeout)
            t_seen = pr.t_done
            pl_recs.append((pr.t_send, pr.t_first, pr.t_done, pr.status, pr.error))
            segs = seg_numbers(pr.body) if pr.status == 200 else []
            if segs:
                if last is None:
                    last = max(segs)  # join at the live edge; only later segments are measured
                else:
                    for k in sorted(s for s in set(segs) if s > last):
                        if time.monotonic() >= t_end:
                            break
                        sr = await c.get(f"/live/ch0/v{r}/seg_{k}.ts", timeout=a.timeout)
                        seg_recs.append((i, r, k, sr.t_send, sr.t_first, sr.t_body, sr.t_done, sr.status,
                                         sr.length, sr.error, t_seen))
                        last = k
            step = a.poll_ms / 1000.0
            nxt += step
            while nxt < time.monotonic():
                nxt += step
        connects.append(c.connects)
        c.close()

    async def snapper():
        for name, when in (("start", t_meas0), ("end", t_meas1), ("final", t_end + 0.5)):
            await asyncio.sleep(max(0.0, when - time.monotonic()))
            c = Client(a.origin_port)
            rr = await c.get("/origin/stats", keep_body=True, timeout=5)
            c.close()
            snaps[name] = {"t": time.monotonic(), "stats": json.loads(rr.body) if rr.status == 200 else None,
                           "cpu": cpu_seconds(a.edge_pid), "load": loadavg()}

    await asyncio.gather(snapper(), *(viewer(i) for i in range(n)))

    ks = [k for k in range(kc - 10, kc + 10000) if t_meas0 <= t_pub(k) < t_meas1]
    kset = set(ks)
    rec = [x for x in seg_recs if x[2] in kset]
    good = [x for x in rec if x[7] == 200 and not x[9]]
    bad = [x for x in rec if not (x[7] == 200 and not x[9])]
    # Every viewer should have fetched every measured segment of its rendition.
    expected = n * len(ks)
    per_path = (snaps.get("final") or {}).get("stats") or {}
    per_path = per_path.get("per_path", {})
    seg_up = [per_path.get(f"/live/ch0/v{r}/seg_{k}.ts", 0) for r in range(a.renditions) for k in ks]

    def pl_count(s):
        pp = ((snaps.get(s) or {}).get("stats") or {}).get("per_path", {})
        return sum(v for p, v in pp.items() if p.startswith("/live/ch0/") and p.endswith(".m3u8"))

    pl_up = pl_count("end") - pl_count("start")
    pl_meas = [x for x in pl_recs if t_meas0 <= x[0] < t_meas1]
    out = {
        "edge": a.name,
        "viewers": n,
        "renditions": a.renditions,
        "poll_ms": a.poll_ms,
        "window_s": [a.warm, a.measure, a.tail],
        "calibration": {"k": kc, "uncertainty_ms": unc * 1000, "requests": ncal},
        "segments_measured": ks,
        "load": load0,
        "load_end": (snaps.get("end") or {}).get("load"),
        "seg_fetches": len(rec),
        "seg_expected": expected,
        "seg_errors": len(bad),
        "seg_error_samples": [list(x[7:10]) for x in bad[:5]],
        "ttfb_ms": summary_ms([x[4] - x[3] for x in good if x[4] is not None]),
        "first_body_ms": summary_ms([x[5] - x[3] for x in good if x[5] is not None]),
        "delay_ms": summary_ms([x[6] - t_pub(x[2]) for x in good]),
        "playlist_lag_ms": summary_ms([x[10] - t_pub(x[2]) for x in good]),
        "playlist_ttfb_ms": summary_ms([x[1] - x[0] for x in pl_meas if x[1] is not None]),
        "playlist_requests": len(pl_meas),
        "playlist_errors": sum(1 for x in pl_meas if x[3] != 200 or x[4]),
        "upstream_seg_per_segment": {"mean": (sum(seg_up) / len(seg_up)) if seg_up else None,
                                     "max": max(seg_up) if seg_up else None,
                                     "min": min(seg_up) if seg_up else None,
                                     "objects": len(seg_up)},
        "upstream_playlists_per_s": pl_up / a.measure,
        "edge_cpu_s": ((snaps.get("end") or {}).get("cpu", 0) - (snaps.get("start") or {}).get("cpu", 0)),
        "connects_per_viewer_max": max(connects) if connects else None,
    }
    return out


def client_cpu():
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cmd_live(a):
    c0, t0 = client_cpu(), time.monotonic()
    out = asyncio.run(live_run(a))
    # The viewers' own CPU share (one Python process): near 1.0 means the client, not the edge,
    # limits the timings.
    out["client_cpu_share"] = (client_cpu() - c0) / (time.monotonic() - t0)
    write_json(a.out, out)
    d, t = out["delay_ms"], out["ttfb_ms"]
    print(f"  {a.name} live: {out['seg_fetches']}/{out['seg_expected']} segment fetches, {out['seg_errors']} errors; "
          f"upstream/segment {fnum(out['upstream_seg_per_segment']['mean'])}; TTFB p50 {fnum(t['p50'])} p99 {fnum(t['p99'])} "
          f"max {fnum(t['max'])} ms; delay p50 {fnum(d['p50'])} p99 {fnum(d['p99'])} max {fnum(d['max'])} ms; client CPU {out['client_cpu_share']:.2f}; "
          f"load {out['load'][0]:.2f}", flush=True)


# --------------------------------------------------------------------------- coalesced waiters


async def coalesce_run(a):
    load0 = loadavg()
    c = Client(a.origin_port)
    pr = await c.get("/live/ch1/v0/index.m3u8", keep_body=True, timeout=5)
    c.close()
    segs = sorted(set(seg_numbers(pr.body)), reverse=True)
    ks = segs[: a.trials]
    trials = []
    for k in ks:
        path = f"/live/ch1/v0/seg_{k}.ts"
        clients = [Client(a.port) for _ in range(a.waiters + 1)]
        await asyncio.gather(*(cl.ensure() for cl in clients))
        lead = asyncio.create_task(clients[0].get(path, timeout=a.timeout))
        await asyncio.sleep(a.gap_ms / 1000.0)
        waits = [asyncio.create_task(cl.get(path, timeout=a.timeout)) for cl in clients[1:]]
        rs = await asyncio.gather(lead, *waits)
        for cl in clients:
            cl.close()
        L = rs[0]
        trial = {"k": k, "leader": {"status": L.status, "error": L.error, "length": L.length,
                                    "first_body_ms": (L.t_body - L.t_send) * 1000 if L.t_body else None,
                                    "fill_ms": (L.t_done - L.t_body) * 1000 if L.t_body else None},
                 "waiters": []}
        for w in rs[1:]:
            trial["waiters"].append({
                "status": w.status, "error": w.error, "length": w.length,
                "delta_first_body_ms": (w.t_body - L.t_body) * 1000 if (w.t_body and L.t_body) else None,
                "delta_done_ms": (w.t_done - L.t_done) * 1000 if (w.t_done and L.t_done) else None,
            })
        trials.append(trial)
        await asyncio.sleep(0.3)
    await asyncio.sleep(0.2)
    c = Client(a.origin_port)
    st = await c.get("/origin/stats", keep_body=True, timeout=5)
    c.close()
    pp = json.loads(st.body).get("per_path", {}) if st.status == 200 else {}
    ups = [pp.get(f"/live/ch1/v0/seg_{k}.ts", 0) for k in ks]
    deltas = [w["delta_first_body_ms"] / 1000 for t in trials for w in t["waiters"] if w["delta_first_body_ms"] is not None]
    done = [w["delta_done_ms"] / 1000 for t in trials for w in t["waiters"] if w["delta_done_ms"] is not None]
    lengths = {t["leader"]["length"] for t in trials} | {w["length"] for t in trials for w in t["waiters"]}
    errors = sum(1 for t in trials for x in [t["leader"]] + t["waiters"] if x["status"] != 200 or x["error"])
    return {
        "edge": a.name, "waiters": a.waiters, "trials": len(trials), "gap_ms": a.gap_ms, "load": load0,
        "segments": ks, "upstream_per_object": ups, "errors": errors, "lengths": sorted(lengths),
        "leader_first_body_ms": summary_ms([t["leader"]["first_body_ms"] / 1000 for t in trials if t["leader"]["first_body_ms"]]),
        "leader_fill_ms": summary_ms([t["leader"]["fill_ms"] / 1000 for t in trials if t["leader"]["fill_ms"]]),
        "waiter_first_body_delta_ms": summary_ms(deltas),
        "waiter_done_delta_ms": summary_ms(done),
        "detail": trials,
    }


def cmd_coalesce(a):
    out = asyncio.run(coalesce_run(a))
    write_json(a.out, out)
    d = out["waiter_first_body_delta_ms"]
    print(f"  {a.name} coalesce: {out['trials']} trials x {a.waiters} waiters, upstream/object {out['upstream_per_object']}, "
          f"leader fill p50 {fnum(out['leader_fill_ms']['p50'])} ms; waiter first body - leader's: p50 {fnum(d['p50'])} "
          f"p99 {fnum(d['p99'])} max {fnum(d['max'])} ms; errors {out['errors']}; load {out['load'][0]:.2f}", flush=True)


# --------------------------------------------------------------------------- iperf3


def cmd_iperf(a):
    with open(a.file) as f:
        j = json.load(f)
    end = j.get("end", {})
    bps = end.get("sum_received", {}).get("bits_per_second") or end.get("sum", {}).get("bits_per_second")
    write_json(a.out, {"gbps": (bps or 0) / 1e9, "streams": a.streams, "load": a.load,
                       "cpu": end.get("cpu_utilization_percent")})
    print(f"  iperf3 -P {a.streams}: {(bps or 0) / 1e9:.2f} Gbit/s (load {a.load[0]:.2f})", flush=True)


# --------------------------------------------------------------------------- report


def fnum(x, d=2):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{d}f}"


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or b <= 0 or a < 0:
        return "–"
    return f"{a / b:.2f}"


def cmd_report(a):
    d = a.dir

    def load(name):
        p = os.path.join(d, name)
        if not os.path.exists(p):
            return None
        with open(p) as f:
            return json.load(f)

    edges = ["listo", "nginx", "varnish"]
    ip1, ip4 = load("iperf1.json"), load("iperf4.json")
    hot = {e: load(f"hot-{e}.json") for e in edges}
    live = {e: load(f"live-{e}.json") for e in edges + ["direct"]}
    coal = {e: load(f"coalesce-{e}.json") for e in edges + ["direct"]}
    meta = load("meta.json") or {}
    ipmax = max([x["gbps"] for x in (ip1, ip4) if x] or [0]) or None

    def g(obj, *path):
        for p in path:
            if obj is None:
                return None
            obj = obj.get(p) if isinstance(obj, dict) else None
        return obj

    def ld(obj, *path):
        v = g(obj, *path)
        return f"{v[0]:.1f}" if v else "–"

    rows = []
    # (label, values per edge, reference, reference label, higher_is_better, iperf ratio?, loads)

    def row(label, vals, ref=None, vs_iperf=False, loads=None, better=""):
        lst, ngx, vrn = vals
        rows.append([label, fnum(lst), fnum(ngx), fnum(vrn), fnum(ref) if ref is not None else "",
                     ratio(lst, ngx), ratio(lst, vrn), ratio(lst, ipmax) if vs_iperf else "",
                     better, loads or ""])

    hm = {e: g(hot[e], "median") for e in edges}
    hload = "/".join(ld(hm[e], "load") for e in edges)
    row("loopback TCP, iperf3 1 stream (Gbit/s)", (None, None, None), g(ip1, "gbps"),
        loads="ref " + ld(ip1, "load"))
    row("loopback TCP, iperf3 -P 4 (Gbit/s)", (None, None, None), g(ip4, "gbps"), loads="ref " + ld(ip4, "load"))
    row("hot 2 MiB: throughput (Gbit/s)", [g(hm[e], "gbps") for e in edges], None, True, hload, "higher")
    row("hot 2 MiB: requests/s", [g(hm[e], "rps") for e in edges], None, False, hload, "higher")
    row("hot 2 MiB: latency p50 (ms)", [g(hm[e], "p50_ms") for e in edges], None, False, hload, "lower")
    row("hot 2 MiB: latency p99 (ms)", [g(hm[e], "p99_ms") for e in edges], None, False, hload, "lower")
    row("hot 2 MiB: latency max (ms)", [g(hm[e], "max_ms") for e in edges], None, False, hload, "lower")
    row("hot 2 MiB: edge CPU seconds in the run", [g(hm[e], "cpu_s") for e in edges], None, False, hload, "lower")
    row("hot 2 MiB: edge CPU-ms per Gbit", [g(hm[e], "cpu_ms_per_gbit") for e in edges], None, False, hload, "lower")
    row("hot 2 MiB: edge threads' wait for a CPU (s)", [g(hm[e], "runq_wait_s") for e in edges], None, False, hload,
        "(contention)")
    row("hot 2 MiB: wrk errors (socket + non-2xx)",
        [(g(hm[e], "socket_errors") or 0) + (g(hm[e], "non2xx") or 0) if hm[e] else None for e in edges],
        None, False, hload, "0")
    lload = "/".join(ld(live[e], "load") for e in edges) + " ref " + ld(live["direct"], "load")
    lv = lambda *p: [g(live[e], *p) for e in edges]
    lr = lambda *p: g(live["direct"], *p)
    row("live: upstream requests per segment (mean)", lv("upstream_seg_per_segment", "mean"),
        lr("upstream_seg_per_segment", "mean"), loads=lload, better="1")
    row("live: upstream requests per segment (max)", lv("upstream_seg_per_segment", "max"),
        lr("upstream_seg_per_segment", "max"), loads=lload, better="1")
    row("live: upstream playlist requests/s", lv("upstream_playlists_per_s"), lr("upstream_playlists_per_s"),
        loads=lload, better="lower")
    for k, lab in (("p50", "p50"), ("p99", "p99"), ("max", "max")):
        row(f"live: segment TTFB {lab} (ms)", lv("ttfb_ms", k), lr("ttfb_ms", k), loads=lload, better="lower")
    for k, lab in (("p50", "p50"), ("p99", "p99"), ("max", "max")):
        row(f"live: origin publish → viewer has segment, {lab} (ms)", lv("delay_ms", k), lr("delay_ms", k),
            loads=lload, better="lower")
    row("live: … of which playlist lag p50 (ms)", lv("playlist_lag_ms", "p50"), lr("playlist_lag_ms", "p50"),
        loads=lload, better="lower")
    row("live: playlist TTFB p50 (ms)", lv("playlist_ttfb_ms", "p50"), lr("playlist_ttfb_ms", "p50"),
        loads=lload, better="lower")
    row("live: playlist TTFB p99 (ms)", lv("playlist_ttfb_ms", "p99"), lr("playlist_ttfb_ms", "p99"),
        loads=lload, better="lower")
    row("live: segment fetch errors / fetches",
        [f"{g(live[e], 'seg_errors')}/{g(live[e], 'seg_fetches')}" if live[e] else None for e in edges],
        f"{lr('seg_errors')}/{lr('seg_fetches')}" if live["direct"] else None, loads=lload, better="0")
    row("live: edge CPU seconds in the window", lv("edge_cpu_s"), lr("edge_cpu_s"), loads=lload, better="lower")
    cload = "/".join(ld(coal[e], "load") for e in edges) + " ref " + ld(coal["direct"], "load")
    cv = lambda *p: [g(coal[e], *p) for e in edges]
    cr = lambda *p: g(coal["direct"], *p)
    for k in ("p50", "p99", "max"):
        row(f"trickled object: waiter first body byte − leader's, {k} (ms)", cv("waiter_first_body_delta_ms", k),
            cr("waiter_first_body_delta_ms", k), loads=cload, better="lower")
    row("trickled object: leader fill time p50 (ms)", cv("leader_fill_ms", "p50"), cr("leader_fill_ms", "p50"),
        loads=cload)
    row("trickled object: upstream requests per object (max)",
        [max(g(coal[e], "upstream_per_object") or [0]) if coal[e] else None for e in edges],
        max(cr("upstream_per_object") or [0]) if coal["direct"] else None, loads=cload, better="1")

    hdr = ["figure", "LISTO", "nginx", "Varnish", "ref", "LISTO/nginx", "LISTO/Varnish", "LISTO/iperf3",
           "better", "load1 (L/n/V ref)"]
    lines = []
    lines.append(f"# LISTO end-to-end loopback bench — {meta.get('date', '')}")
    lines.append("")
    lines.append(f"Command: `{meta.get('command', 'bash benches/e2e/e2e.sh')}`  ")
    lines.append(f"Machine: {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores, kernel {meta.get('kernel', '?')}; "
                 f"nginx {meta.get('nginx', '?')}, Varnish {meta.get('varnish', '?')}, wrk {meta.get('wrk', '?')}, "
                 f"iperf3 {meta.get('iperf3', '?')}; listo {meta.get('listo_rev', '?')}  ")
    lines.append(f"Load at start: {meta.get('uptime_start', '?')}  ")
    lines.append(f"Load at end: {meta.get('uptime_end', '?')}")
    lines.append("")
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
    for r in rows:
        lines.append("| " + " | ".join(str(x) for x in r) + " |")
    lines.append("")
    hot_runs = {e: [round(x.get("gbps", 0), 2) for x in (g(hot[e], "runs") or [])] for e in edges}
    hcmd = next((hot[e]["cmd"] for e in edges if hot[e]), "wrk")
    lines.append(f"Hot object: `{hcmd}` per edge, {meta.get('hot_runs', '?')} runs each, "
                 f"median run shown (all runs, Gbit/s: " + "; ".join(f"{e} {hot_runs[e]}" for e in edges) + "). "
                 "The upstream is a static file server; every edge is warm first and no run touched the upstream "
                 f"(upstream requests during runs: " + ", ".join(
                     f"{e} {sum(x.get('upstream_requests', 0) for x in (g(hot[e], 'runs') or []))}" for e in edges) + ").  ")
    lv0 = next((live[e] for e in edges + ["direct"] if live[e]), {})
    lines.append(f"Live: `listo origin --latency-ms 20` (2 s segments, renditions 800 and 2500 kbit/s), "
                 f"{lv0.get('viewers', '?')} viewers split over the two renditions, each on one keep-alive connection, "
                 f"polling its media playlist every {lv0.get('poll_ms', '?')} ms (phases spread evenly) and fetching each "
                 f"newly listed segment; {(lv0.get('window_s') or ['?'] * 3)[1]} s measured after "
                 f"{(lv0.get('window_s') or ['?'] * 3)[0]} s of warm-up. 'ref' = the same viewers straight at the origin. "
                 "Publish time = the origin's schedule, calibrated by polling the origin directly "
                 "(uncertainty ±" + "/".join(fnum(g(live[e], 'calibration', 'uncertainty_ms'), 1) for e in edges + ['direct']) +
                 " ms). TTFB = request sent → first response byte.  ")
    c0 = next((coal[e] for e in edges + ["direct"] if coal[e]), {})
    lines.append(f"Trickled object: `listo origin --latency-ms 20 --rate-mbps 1`, a 200 KB segment (~1.6 s); "
                 f"1 leader, then {c0.get('waiters', '?')} waiters {c0.get('gap_ms', '?')} ms later, on a cold object, "
                 f"{c0.get('trials', '?')} trials; a negative difference means the waiter's first bytes were read in the same "
                 "client loop turn as the leader's, just before them.  ")
    lines.append("Ratios are LISTO ÷ the other; 'better' says which direction is good. LISTO/iperf3 is against the "
                 "better of the two iperf3 figures. Load = 1-minute load average when that figure was measured "
                 "(this is a shared 2-core machine: the edges, wrk and the viewers share its cores).")
    text = "\n".join(lines) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text)


# --------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("static-origin")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--dir", required=True)

    s = sub.add_parser("hot")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--path", required=True)
    s.add_argument("--size", type=int, required=True)
    s.add_argument("--edge-pid", type=int, required=True)
    s.add_argument("--origin-log", required=True)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--connections", type=int, default=200)
    s.add_argument("--duration", type=int, default=10)
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--perf-out")
    s.add_argument("--out", required=True)

    s = sub.add_parser("live")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--origin-port", type=int, required=True)
    s.add_argument("--edge-pid", type=int, default=0)
    s.add_argument("--viewers", type=int, default=200)
    s.add_argument("--renditions", type=int, default=2)
    s.add_argument("--segment-secs", type=float, default=2.0)
    s.add_argument("--poll-ms", type=float, default=250)
    s.add_argument("--warm", type=float, default=4)
    s.add_argument("--measure", type=float, default=16)
    s.add_argument("--tail", type=float, default=3)
    s.add_argument("--timeout", type=float, default=10)
    s.add_argument("--out", required=True)

    s = sub.add_parser("coalesce")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--origin-port", type=int, required=True)
    s.add_argument("--waiters", type=int, default=50)
    s.add_argument("--trials", type=int, default=5)
    s.add_argument("--gap-ms", type=float, default=5)
    s.add_argument("--timeout", type=float, default=15)
    s.add_argument("--out", required=True)

    s = sub.add_parser("iperf")
    s.add_argument("--file", required=True)
    s.add_argument("--streams", type=int, required=True)
    s.add_argument("--load", help="/proc/loadavg before the run (default: now)")
    s.add_argument("--out", required=True)

    s = sub.add_parser("report")
    s.add_argument("--dir", required=True)
    s.add_argument("--out", required=True)

    a = ap.parse_args()
    if a.cmd == "iperf":
        a.load = [float(x) for x in a.load.split()[:3]] if a.load else loadavg()
    {"static-origin": cmd_static_origin, "hot": cmd_hot, "live": cmd_live, "coalesce": cmd_coalesce,
     "iperf": cmd_iperf, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
