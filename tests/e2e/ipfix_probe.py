#!/usr/bin/env python3
"""IPFIX (RFC 7011) by hand, for the export e2e test: a message builder, a stream parser (the
TCP transport has no collector of its own among Debian's), and the two collectors the test
reads, nfcapd (nfdump 1.7.1) and nfacctd (pmacct 1.7.7), each run inside a namespace on a port
of the test's own choosing.

Run alone (`ipfix_probe.py`), it builds a scratch namespace, sends hand-made messages with the
layout of netlens's records to both collectors and prints what each decodes: the evidence for
the collector settings export_e2e.py relies on. Only the scratch namespace's loopback carries
traffic; everything made is removed at the end.
"""
import ipaddress
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

PEN = 32473  # netlens's enterprise elements (RFC 5612's documentation number, a placeholder)

# Information Elements (IANA) the records carry.
OCTETS, PACKETS = 1, 2
PROTO = 4
SRC_PORT, DST_PORT = 7, 11
SRC_V4, DST_V4 = 8, 12
SRC_V6, DST_V6 = 27, 28
FLOW_DIRECTION = 61
FLOW_END_REASON = 136
FLOW_START_MS, FLOW_END_MS = 152, 153
POST_NAT_SRC_V4, POST_NAT_DST_V4 = 225, 226
POST_NAPT_SRC_PORT, POST_NAPT_DST_PORT = 227, 228
POST_NAT_SRC_V6, POST_NAT_DST_V6 = 281, 282
TRANSPORT_OCTETS, TRANSPORT_PACKETS = 401, 402
# netlens's own, under PEN
E_PID, E_COMM, E_CONTAINER, E_NETNS, E_SRTT, E_RTTVAR, E_RETRANS, E_INITIATOR = range(1, 9)
E_PAYLOAD_OCTETS_TOTAL, E_PAYLOAD_PACKETS_TOTAL = 9, 10
E_PACKETS_DELTA = 11  # the socket's packets since the previous report (the agent has no IE 402)

V4_ADDRS = {SRC_V4, DST_V4, POST_NAT_SRC_V4, POST_NAT_DST_V4}
V6_ADDRS = {SRC_V6, DST_V6, POST_NAT_SRC_V6, POST_NAT_DST_V6}
STRINGS = {(PEN, E_COMM), (PEN, E_CONTAINER)}
VARLEN = 0xFFFF


# ---- building ------------------------------------------------------------------------------

def template_record(tid, fields):
    """fields: [(ie, length) or (ie, length, pen)]."""
    out = struct.pack("!HH", tid, len(fields))
    for f in fields:
        if len(f) == 3 and f[2]:
            out += struct.pack("!HHI", f[0] | 0x8000, f[1], f[2])
        else:
            out += struct.pack("!HH", f[0], f[1])
    return out


def encode_value(ie, length, pen, value):
    key = (pen or 0, ie)
    if length == VARLEN:
        data = value.encode() if isinstance(value, str) else bytes(value)
        head = struct.pack("!B", len(data)) if len(data) < 255 else struct.pack("!BH", 255,
                                                                                 len(data))
        return head + data
    if not pen and (ie in V4_ADDRS or ie in V6_ADDRS):
        return ipaddress.ip_address(value).packed
    if key in STRINGS:
        return value.encode().ljust(length, b"\0")[:length]
    return int(value).to_bytes(length, "big")


def data_record(fields, values):
    """values: {ie or (pen, ie): value}; every field of the template must be there."""
    out = b""
    for f in fields:
        ie, length, pen = f[0], f[1], (f[2] if len(f) == 3 else 0)
        v = values[(pen, ie)] if pen else values.get(ie, values.get((0, ie)))
        out += encode_value(ie, length, pen, v)
    return out


def set_(set_id, body):
    pad = (-len(body)) % 4
    return struct.pack("!HH", set_id, 4 + len(body) + pad) + body + b"\0" * pad


def message(domain, seq, sets, export_time=None):
    body = b"".join(sets)
    t = int(time.time()) if export_time is None else export_time
    return struct.pack("!HHIII", 10, 16 + len(body), t, seq, domain) + body


# ---- parsing -------------------------------------------------------------------------------

class Decoder:
    """Decodes a sequence of IPFIX messages (one UDP payload each, or a TCP stream cut by the
    header's length). Records come out as dicts keyed by IE id (IANA) or (PEN, id)."""

    def __init__(self):
        self.templates = {}  # (domain, tid) -> fields
        self.records = []    # (domain, tid, dict)
        self.messages = []   # (version, length, export_time, seq, domain, n data records)
        self.errors = []
        self.withdrawn = []

    def feed_stream(self, buf):
        """Consumes whole messages from the front of buf; returns the rest."""
        while len(buf) >= 16:
            version, length = struct.unpack("!HH", buf[:4])
            if version != 10 or length < 16:
                self.errors.append("bad header version %d length %d" % (version, length))
                return b""
            if len(buf) < length:
                break
            self.feed_message(buf[:length])
            buf = buf[length:]
        return buf

    def feed_message(self, msg):
        version, length, etime, seq, domain = struct.unpack("!HHIII", msg[:16])
        if version != 10 or length != len(msg):
            self.errors.append("message: version %d, length %d of %d" % (version, length,
                                                                         len(msg)))
            return
        off, n = 16, 0
        while off + 4 <= length:
            sid, slen = struct.unpack("!HH", msg[off:off + 4])
            if slen < 4 or off + slen > length:
                self.errors.append("set %d: length %d at %d of %d" % (sid, slen, off, length))
                return
            body = msg[off + 4:off + slen]
            if sid == 2:
                self._templates(domain, body)
            elif sid >= 256:
                n += self._data(domain, sid, body)
            elif sid != 3:
                self.errors.append("set id %d" % sid)
            off += slen
        if off != length:
            self.errors.append("trailing %d bytes" % (length - off))
        self.messages.append((version, length, etime, seq, domain, n))

    def _templates(self, domain, body):
        off = 0
        while off + 4 <= len(body):
            tid, count = struct.unpack("!HH", body[off:off + 4])
            off += 4
            if tid == 0:  # padding
                break
            if count == 0:
                self.withdrawn.append((domain, tid))
                self.templates.pop((domain, tid), None)
                continue
            fields = []
            for _ in range(count):
                ie, ln = struct.unpack("!HH", body[off:off + 4])
                off += 4
                pen = 0
                if ie & 0x8000:
                    ie &= 0x7FFF
                    pen = struct.unpack("!I", body[off:off + 4])[0]
                    off += 4
                fields.append((ie, ln, pen))
            self.templates[(domain, tid)] = fields

    def _data(self, domain, tid, body):
        fields = self.templates.get((domain, tid))
        if fields is None:
            self.errors.append("data set %d before its template" % tid)
            return 0
        off, n = 0, 0
        minimum = sum(1 if ln == VARLEN else ln for _, ln, _ in fields)
        while len(body) - off >= minimum and minimum > 0:
            rec = {}
            for ie, ln, pen in fields:
                if ln == VARLEN:
                    ln = body[off]
                    off += 1
                    if ln == 255:
                        ln = struct.unpack("!H", body[off:off + 2])[0]
                        off += 2
                raw = body[off:off + ln]
                off += ln
                rec[(pen, ie) if pen else ie] = decode_value(ie, pen, raw)
            self.records.append((domain, tid, rec))
            n += 1
        if any(body[off:]):
            self.errors.append("data set %d: %d trailing non-zero bytes" % (tid, len(body) - off))
        return n


def decode_value(ie, pen, raw):
    if not pen and (ie in V4_ADDRS or ie in V6_ADDRS):
        return str(ipaddress.ip_address(raw))
    if (pen, ie) in STRINGS:
        return raw.rstrip(b"\0").decode(errors="replace")
    return int.from_bytes(raw, "big")


class TcpCollector:
    """A minimal IPFIX-over-TCP collecting process (RFC 7011 section 10.4) on a listening socket
    the caller made: accepts sessions, cuts the stream by message length, decodes. One Decoder
    per session: templates live as long as their session."""

    def __init__(self, listener):
        import threading
        self.listener = listener
        self.sessions = []  # Decoder per accepted connection, in order
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while True:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            d = Decoder()
            with self.lock:
                self.sessions.append(d)
            threading.Thread(target=self._read, args=(s, d), daemon=True).start()

    def _read(self, s, d):
        buf = b""
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                if buf:
                    d.errors.append("session ended inside a message (%d bytes)" % len(buf))
                s.close()
                return
            with self.lock:
                buf = d.feed_stream(buf + data)

    def records(self):
        with self.lock:
            return [r for d in self.sessions for r in d.records]

    def errors(self):
        with self.lock:
            return [e for d in self.sessions for e in d.errors]


# ---- the collectors ------------------------------------------------------------------------

def in_ns(ns, *cmd):
    return ["nsenter", "--net=/run/netns/" + ns] + list(cmd)


# nfcapd (nfdump 1.7.1) takes IPFIX over UDP only. It writes nfcapd.current.<pid> while it
# runs and renames it to nfcapd.<YYYYmmddHHMM[SS]> at each rotation (-t, at least 2 s) and at
# SIGTERM; nfdump reads only finished files reliably, so the test reads the whole directory
# (-R) after a rotation or after stopping it. -t 2 keeps the wait for a rotation short.
def nfcapd_argv(flowdir, port, rotate_s=2):
    return ["nfcapd", "-w", flowdir, "-b", "127.0.0.1", "-p", str(port), "-t", str(rotate_s),
            "-I", "netlens-e2e"]


# nfdump's fmt: fields. %ibyt/%ipkt are IE 1/2 (octetDeltaCount/packetDeltaCount); %xsa etc.
# the post-NAT(PT) elements 225-228 and 281/282; %dir is flowDirection (IE 61). IE 401/402,
# 152/153 (as milliseconds: %tsr?), 136 and the enterprise elements have no column.
NFDUMP_FMT = ("fmt:%ts|%te|%pr|%sa|%sp|%da|%dp|%ibyt|%ipkt|%xsa|%xsp|%xda|%xdp|%dir|%fl")
NFDUMP_COLS = ["ts", "te", "proto", "sa", "sp", "da", "dp", "ibyt", "ipkt", "xsa", "xsp", "xda",
               "xdp", "dir", "flows"]


def nfdump_records(flowdir):
    """Every record of every finished file in flowdir, as dicts of NFDUMP_COLS (strings)."""
    files = [f for f in os.listdir(flowdir) if f.startswith("nfcapd.") and "current" not in f]
    if not files:
        return []
    r = subprocess.run(["nfdump", "-q", "-N", "-R", flowdir, "-o", NFDUMP_FMT],
                       capture_output=True, text=True)
    out = []
    for line in r.stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == len(NFDUMP_COLS):
            out.append(dict(zip(NFDUMP_COLS, parts)))
    return out


# nfacctd (pmacct 1.7.7) also takes IPFIX over UDP only (DTLS aside). The print plugin writes
# one JSON object per aggregate and line every print_refresh_time seconds; with
# print_output_file_append it appends instead of rewriting, so nothing printed is lost. Each
# record is its own aggregate when the key holds both timestamps and both endpoints.
NFACCTD_AGGREGATE = ("src_host, dst_host, src_port, dst_port, proto, timestamp_start, "
                     "timestamp_end, post_nat_src_host, post_nat_dst_host, post_nat_src_port, "
                     "post_nat_dst_port, export_proto_sysid")


def nfacctd_config(path, port, out_file, pidfile):
    with open(path, "w") as f:
        f.write("""daemonize: false
pidfile: %s
nfacctd_ip: 127.0.0.1
nfacctd_port: %d
nfacctd_time_new: false
timestamps_secs: false
timestamps_since_epoch: true
plugins: print[e2e]
aggregate[e2e]: %s
print_output[e2e]: json
print_output_file[e2e]: %s
print_output_file_append[e2e]: true
print_refresh_time[e2e]: 1
""" % (pidfile, port, NFACCTD_AGGREGATE, out_file))
    return path


def nfacctd_records(out_file):
    out = []
    try:
        text = open(out_file).read()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


# ---- the probe -----------------------------------------------------------------------------

V4_FIELDS = [(SRC_V4, 4), (DST_V4, 4), (SRC_PORT, 2), (DST_PORT, 2), (PROTO, 1),
             (FLOW_DIRECTION, 1), (FLOW_START_MS, 8), (FLOW_END_MS, 8), (FLOW_END_REASON, 1),
             (OCTETS, 8), (PACKETS, 8), (TRANSPORT_OCTETS, 8), (TRANSPORT_PACKETS, 8),
             (POST_NAT_SRC_V4, 4), (POST_NAT_DST_V4, 4), (POST_NAPT_SRC_PORT, 2),
             (POST_NAPT_DST_PORT, 2),
             (E_PID, 4, PEN), (E_COMM, VARLEN, PEN), (E_CONTAINER, VARLEN, PEN),
             (E_NETNS, 4, PEN), (E_SRTT, 4, PEN), (E_RTTVAR, 4, PEN), (E_RETRANS, 4, PEN),
             (E_INITIATOR, 1, PEN), (E_PAYLOAD_OCTETS_TOTAL, 8, PEN),
             (E_PAYLOAD_PACKETS_TOTAL, 8, PEN), (E_PACKETS_DELTA, 8, PEN)]
V6_FIELDS = [(SRC_V6, 16), (DST_V6, 16)] + V4_FIELDS[2:13] + [
    (POST_NAT_SRC_V6, 16), (POST_NAT_DST_V6, 16), (POST_NAPT_SRC_PORT, 2),
    (POST_NAPT_DST_PORT, 2)] + V4_FIELDS[17:]
# Without IE 1/2 (traffic over lo only): what a collector makes of transport counts alone.
V4_NODEV_FIELDS = [f for f in V4_FIELDS if f[0] not in (OCTETS, PACKETS) or len(f) == 3]


def probe_records(now_ms):
    common = {FLOW_START_MS: now_ms - 5000, FLOW_END_MS: now_ms - 1000, FLOW_END_REASON: 3,
              (PEN, E_PID): 4242, (PEN, E_COMM): "probe", (PEN, E_CONTAINER): "",
              (PEN, E_NETNS): 4026531840, (PEN, E_SRTT): 120, (PEN, E_RTTVAR): 30,
              (PEN, E_RETRANS): 0, (PEN, E_INITIATOR): 1,
              (PEN, E_PAYLOAD_OCTETS_TOTAL): 0, (PEN, E_PAYLOAD_PACKETS_TOTAL): 0,
              (PEN, E_PACKETS_DELTA): 0}
    v4 = dict(common); v4.update({SRC_V4: "10.232.0.1", DST_V4: "10.232.0.2", SRC_PORT: 40001,
                         DST_PORT: 18080, PROTO: 6, FLOW_DIRECTION: 1, OCTETS: 111111,
                         PACKETS: 111, TRANSPORT_OCTETS: 100000, TRANSPORT_PACKETS: 100,
                         POST_NAT_SRC_V4: "10.232.0.1", POST_NAT_DST_V4: "10.232.0.2",
                         POST_NAPT_SRC_PORT: 40001, POST_NAPT_DST_PORT: 19090})
    v4r = dict(v4); v4r.update({SRC_V4: "10.232.0.2", DST_V4: "10.232.0.1", SRC_PORT: 18080,
                      DST_PORT: 40001, FLOW_DIRECTION: 0, OCTETS: 2222, PACKETS: 22,
                      TRANSPORT_OCTETS: 1000, TRANSPORT_PACKETS: 20,
                      POST_NAT_SRC_V4: "10.232.0.2", POST_NAT_DST_V4: "10.232.0.1",
                      POST_NAPT_SRC_PORT: 19090, POST_NAPT_DST_PORT: 40001})
    v6 = dict(common); v6.update({SRC_V6: "fd00:232::1", DST_V6: "fd00:232::2", SRC_PORT: 40002,
                         DST_PORT: 18081, PROTO: 17, FLOW_DIRECTION: 1, OCTETS: 33333,
                         PACKETS: 33, TRANSPORT_OCTETS: 30000, TRANSPORT_PACKETS: 30,
                         POST_NAT_SRC_V6: "fd00:232::1", POST_NAT_DST_V6: "fd00:232::9",
                         POST_NAPT_SRC_PORT: 40002, POST_NAPT_DST_PORT: 19091,
                         (PEN, E_COMM): "x" * 300, (PEN, E_CONTAINER): "c" * 64})
    nodev = dict(v4); nodev.update({SRC_PORT: 40003, OCTETS: None, PACKETS: None, TRANSPORT_OCTETS: 4444,
                        TRANSPORT_PACKETS: 4})
    return v4, v4r, v6, nodev


def main():
    tag = str(os.getpid())
    ns = "nltest-ipfixprobe-" + tag
    work = tempfile.mkdtemp(prefix="netlens-ipfixprobe-")
    procs = []
    nfcapd_port, nfacctd_port, udp_tshark_port = 29995, 29996, 29995
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        flowdir = os.path.join(work, "nfcapd")
        os.mkdir(flowdir)
        cap = subprocess.Popen(in_ns(ns, *nfcapd_argv(flowdir, nfcapd_port)),
                               stdout=open(os.path.join(work, "nfcapd.log"), "w"),
                               stderr=subprocess.STDOUT)
        procs.append(cap)
        acct_out = os.path.join(work, "nfacctd.json")
        conf = nfacctd_config(os.path.join(work, "nfacctd.conf"), nfacctd_port, acct_out,
                              os.path.join(work, "nfacctd.pid"))
        # Its own process group: the print plugin is a child, and the core takes 10 s or more
        # to go on SIGTERM ("Core process *seems* gone" in the plugin's log afterwards).
        acct = subprocess.Popen(in_ns(ns, "nfacctd", "-f", conf),
                                stdout=open(os.path.join(work, "nfacctd.log"), "w"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(acct)
        pcap = os.path.join(work, "probe.pcap")
        shark = subprocess.Popen(in_ns(ns, "dumpcap", "-q", "-i", "lo", "-f",
                                       "udp port %d" % udp_tshark_port, "-w", pcap),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(shark)
        time.sleep(1.5)  # the probe alone: the test polls for readiness instead

        now_ms = int(time.time() * 1000)
        v4, v4r, v6, nodev = probe_records(now_ms)
        templates = set_(2, template_record(256, V4_FIELDS) + template_record(257, V6_FIELDS) +
                         template_record(258, V4_NODEV_FIELDS))
        data = (set_(256, data_record(V4_FIELDS, v4) + data_record(V4_FIELDS, v4r)) +
                set_(257, data_record(V6_FIELDS, v6)) +
                set_(258, data_record(V4_NODEV_FIELDS, nodev)))
        msgs = [message(7, 0, [templates]), message(7, 0, [data])]
        sender = subprocess.run(
            in_ns(ns, "python3", "-c",
                  "import socket,sys,binascii\n"
                  "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                  "for port in (%d,%d):\n"
                  "  for m in sys.argv[1:]: s.sendto(binascii.unhexlify(m),('127.0.0.1',port))\n"
                  % (nfcapd_port, nfacctd_port), *[m.hex() for m in msgs]), check=True)
        del sender
        # Our own decoder on the same bytes.
        d = Decoder()
        for m in msgs:
            d.feed_message(m)
        print("own decoder: %d records, errors %s" % (len(d.records), d.errors))
        time.sleep(3)
        print("--- nfacctd log\n" + open(os.path.join(work, "nfacctd.log")).read()[-2500:])
        for r in nfacctd_records(acct_out):
            print("nfacctd:", r)
        os.killpg(acct.pid, signal.SIGKILL)
        acct.wait()
        t0 = time.monotonic()
        for p in (cap, shark):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print("did not stop on SIGTERM in 10 s:", p.args)
        print("stopped in %.1f s" % (time.monotonic() - t0))
        print("--- nfcapd files:", sorted(os.listdir(flowdir)))
        print(open(os.path.join(work, "nfcapd.log")).read()[-1500:])
        for r in nfdump_records(flowdir):
            print("nfdump:", r)
        raw = subprocess.run(["nfdump", "-R", flowdir, "-o", "raw"], capture_output=True,
                             text=True)
        print("--- nfdump -o raw\n" + raw.stdout[:6000] + raw.stderr[-500:])
        t = subprocess.run(["tshark", "-r", pcap, "-d", "udp.port==%d,cflow" % nfcapd_port,
                            "-V"], capture_output=True, text=True)
        print("--- tshark -V\n" + t.stdout[-9000:] + t.stderr[-500:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if len(procs) > 1:
            try:
                os.killpg(procs[1].pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if os.environ.get("KEEP"):
            print("kept", work)
        else:
            subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
