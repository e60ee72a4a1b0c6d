"""What idle live followers across streams cost, on a tenant with a history (BENCHMARKS.md,
"Live streams across streams: what an idle follower costs"). Prints figures; asserts nothing.

Usage: python3 idle_followers.py TALLY_BIN EVENTS FOLLOWERS

Starts `TALLY_BIN dev` (in-process broker, memory), writes EVENTS transfers in batches of 100
over 4 ledgers, measures the process's CPU over 20 s with no follower, opens FOLLOWERS SSE
followers of the whole tenant (`/v1/events/live` without `stream`), waits until they have
caught up, measures the CPU again over 20 s, then times 5 writes until every follower has them.
"""
import urllib.error, json, os, re, subprocess, sys, threading, time, urllib.request
bin_, events, followers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dev = subprocess.Popen([bin_, "dev", "--http-listen", "127.0.0.1:0", "--query-listen", "127.0.0.1:0",
    "--grpc-listen", "127.0.0.1:0", "--kafka-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addr = {}
for line in dev.stdout:
    m = re.match(r"(query|http|token): (\S+)", line)
    if m: addr[m.group(1)] = m.group(2)
    if len(addr) == 3: break
threading.Thread(target=lambda: [None for _ in dev.stdout], daemon=True).start()
H = {"authorization": "Bearer " + addr["token"], "content-type": "application/json"}
def call(method, url, body=None, headers={}):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), method=method, headers={**H, **headers})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.headers, r.read()
    except urllib.error.HTTPError as e:
        sys.exit(f"{method} {url}: {e.code} {e.read()[:400]}")
http, query = "http://" + addr["http"], "http://" + addr["query"]
t0 = time.time()
for l in range(4):
    call("POST", f"{http}/v1/ledgers/l{l}/assets", {"asset": "USD/2"})
n, pos = 0, None
while n < events:
    l = (n // 100) % 4
    txs = [{"tx_id": f"t{n+i}", "postings": [{"source": "world", "destination": f"a{i%50}", "asset": "USD/2", "amount": 1}]} for i in range(100)]
    h, body = call("POST", f"{http}/v1/ledgers/l{l}/transactions/batch", {"transactions": txs})
    n += 100
    items = json.loads(body)["results"]
    assert all(i["status"] in (200, 201) for i in items), items[0]
    pos = h.get("tally-position") or pos
print(f"wrote {n} transactions in {time.time()-t0:.1f} s", flush=True)
# The last write's events are readable (read-your-writes on its position).
call("GET", f"{query}/v1/events?stream=l{(n // 100 - 1) % 4}&limit=1", headers={"tally-position": pos})
def cpu():
    f = open(f"/proc/{dev.pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
time.sleep(3)
c0, w0 = cpu(), time.time()
time.sleep(20)
print(f"idle: tally dev used {(cpu()-c0)/(time.time()-w0):.3f} cores with no follower", flush=True)
got = [0] * followers
def follow(k):
    req = urllib.request.Request(f"{query}/v1/events/live", headers=H)
    with urllib.request.urlopen(req, timeout=3600) as r:
        for line in r:
            if line.startswith(b"data: "):
                got[k] += 1
                last_seen[k] = time.time()
last_seen = [0.0] * followers
for k in range(followers):
    threading.Thread(target=follow, args=(k,), daemon=True).start()
total = events + 4
t1 = time.time()
while min(got) < total and time.time() - t1 < 900:
    time.sleep(1)
print(f"{followers} followers caught up on {min(got)} events in {time.time()-t1:.1f} s", flush=True)
time.sleep(3)
c0, w0 = cpu(), time.time()
time.sleep(20)
c1, w1 = cpu(), time.time()
print(f"idle: tally dev used {(c1-c0)/(w1-w0):.3f} cores with {followers} idle followers", flush=True)
lat = []
for i in range(5):
    before = list(got)
    t = time.time()
    call("POST", f"{http}/v1/ledgers/l0/transactions", {"tx_id": f"late{i}", "postings": [{"source": "world", "destination": "z", "asset": "USD/2", "amount": 1}]})
    while min(g - b for g, b in zip(got, before)) < 1 and time.time() - t < 30:
        time.sleep(0.005)
    lat.append(max(last_seen) - t)
    time.sleep(1)
print("write to every follower: " + ", ".join(f"{x*1000:.0f} ms" for x in lat), flush=True)
dev.terminate()
dev.wait()
