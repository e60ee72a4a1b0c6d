// Tests against a real `tally dev` (the binary named by $TALLY_BIN, on free ports), each one
// over gRPC (HTTP/2) and over grpc-web (HTTP/1.1, what a browser speaks).

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type Interceptor, ConnectError } from "@connectrpc/connect";
import {
  Client,
  type ClientOptions,
  Code,
  CommandStatus,
  I128_MAX,
  type PostingInput,
  TallyError,
  amount,
  parseEvent,
} from "../src/index.js";

const TOKEN = `tly_sdk-test_${randomBytes(24).toString("hex")}`;
const USD = "USD/2";
const PROTOCOLS = ["grpc", "grpc-web"] as const;

let server: ChildProcess | undefined;
let address = "";

before(async () => {
  const binary = process.env.TALLY_BIN;
  if (!binary) return;
  const dir = mkdtempSync(join(tmpdir(), "tally-ts-"));
  const sha256 = createHash("sha256").update(TOKEN).digest("hex");
  writeFileSync(
    join(dir, "api-keys.toml"),
    `[[key]]\nid = "sdk-test"\ntenant = "sdk"\nsha256 = "${sha256}"\nroles = ["read", "write", "admin"]\n`,
  );
  const args = ["dev", "--kafka-port", "0", "--http-listen", "127.0.0.1:0", "--query-listen", "127.0.0.1:0"];
  args.push("--grpc-listen", "127.0.0.1:0", "--api-keys", join(dir, "api-keys.toml"));
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  server = child;
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk));
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const line = stdout.split("\n").find((l) => l.startsWith("grpc: "));
    if (line) {
      address = line.slice("grpc: ".length).trim();
      return;
    }
    assert.equal(child.exitCode, null, `tally dev exited:\n${stderr}`);
    assert.ok(Date.now() < deadline, `tally dev did not print its gRPC address:\n${stderr}`);
    await sleep(100);
  }
});

after(() => {
  server?.kill("SIGTERM");
});

/** Skips the test when no tally binary is given. */
function requireServer(t: { skip: (why: string) => void }): boolean {
  if (address) return true;
  t.skip("TALLY_BIN is not set: set it to a tally binary to run the tests against `tally dev`");
  return false;
}

function pay(destination: string, value: bigint | number, source = "world"): PostingInput[] {
  return [{ source, destination, asset: USD, amount: value }];
}

/** A fresh ledger with USD/2 defined. */
async function freshLedger(client: Client): Promise<string> {
  const ledger = `l-${randomUUID().slice(0, 12)}`;
  await client.defineAsset(ledger, USD);
  return ledger;
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const item of items) all.push(item);
  return all;
}

/** Lets the first call through to the server, then reports UNAVAILABLE as if its answer had
 * been lost; records every attempt's idempotency key. */
function loseFirstAnswer(keys: (string | null)[]): Interceptor {
  return (next) => async (request) => {
    keys.push(request.header.get("idempotency-key"));
    const response = await next(request);
    if (keys.length === 1) throw new ConnectError("answer lost (test)", Code.Unavailable);
    return response;
  };
}

/** A TCP proxy whose connections can be cut, to drop a stream. */
class Proxy {
  readonly sockets = new Set<net.Socket>();
  connections = 0;
  private readonly server: net.Server;

  private constructor(server: net.Server) {
    this.server = server;
  }

  static async start(target: string): Promise<Proxy> {
    const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
    const proxy: Proxy = new Proxy(
      net.createServer((downstream) => {
        const upstream = net.connect(port, host);
        proxy.connections += 1;
        for (const socket of [downstream, upstream]) {
          proxy.sockets.add(socket);
          socket.on("error", () => {});
          socket.on("close", () => proxy.sockets.delete(socket));
        }
        downstream.pipe(upstream).pipe(downstream);
      }),
    );
    await new Promise<void>((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    return proxy;
  }

  get address(): string {
    const bound = this.server.address() as net.AddressInfo;
    return `127.0.0.1:${bound.port}`;
  }

  cut(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  close(): void {
    this.server.close();
    this.cut();
  }
}

for (const protocol of PROTOCOLS) {
  describe(`over ${protocol}`, () => {
    const client = (options: ClientOptions = {}, at = address) =>
      new Client(`http://${at}`, TOKEN, { protocol, ...options });

    test("a write retried with the same key gets the same answer, made once", async (t) => {
      if (!requireServer(t)) return;
      const keys: (string | null)[] = [];
      const ledger = await freshLedger(client());
      const answer = await client({ interceptors: [loseFirstAnswer(keys)] }).postTransaction(ledger, "t-1", pay("alice", 250));

      assert.equal(keys.length, 2);
      assert.match(keys[0]!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      assert.equal(keys[1], keys[0]);
      assert.equal(answer.status, CommandStatus.ACCEPTED);
      assert.equal(answer.commandId, keys[0]);
      const plain = client();
      const lines = await collect(plain.statement(ledger, "alice", { position: answer.position }));
      assert.deepEqual(
        lines.map((l) => [l.txId, amount(l.amount)]),
        [["t-1", 250n]],
      );
      // The same key again (a later retry) gets the very same answer.
      const again = await plain.postTransaction(ledger, "t-1", pay("alice", 250), {}, { idempotencyKey: keys[0]! });
      assert.deepEqual(again, answer);
    });

    test("each call has a fresh key", async (t) => {
      if (!requireServer(t)) return;
      const tally = client();
      const ledger = await freshLedger(tally);
      const first = await tally.postTransaction(ledger, "t-1", pay("alice", 1));
      const second = await tally.postTransaction(ledger, "t-2", pay("alice", 1));
      assert.notEqual(first.commandId, second.commandId);
    });

    test("a read given a write's position sees it", async (t) => {
      if (!requireServer(t)) return;
      const tally = client();
      const ledger = await freshLedger(tally);
      const answer = await tally.postTransaction(ledger, "t-1", pay("alice", 250));
      assert.ok(answer.position);
      assert.equal(tally.lastPosition, answer.position);

      let account = await tally.getAccount(ledger, "alice", { position: answer.position });
      assert.deepEqual(
        account.balances.map((b) => [b.asset, amount(b.posted)]),
        [[USD, 250n]],
      );
      await tally.postTransaction(ledger, "t-2", pay("alice", 50));
      account = await tally.getAccount(ledger, "alice", { afterLastWrite: true });
      assert.equal(amount(account.balances[0]!.posted), 300n);

      await tally.putDocument("config", ledger, { limit: 5, tags: ["a", 1.5] }, { createOnly: true });
      const document = await tally.getDocument("config", ledger, { afterLastWrite: true });
      assert.equal(document.version, 1n);
      assert.deepEqual(document.value, { limit: 5, tags: ["a", 1.5] });
      // A conditional write at a stale version is refused.
      await assert.rejects(tally.putDocument("config", ledger, { limit: 6 }, { ifMatch: 7 }), (e: TallyError) => {
        assert.deepEqual([e.code, e.reason], [Code.Aborted, "VERSION_MISMATCH"], e.message);
        return true;
      });
    });

    test("lists follow each page's cursor", async (t) => {
      if (!requireServer(t)) return;
      const tally = client();
      const ledger = await freshLedger(tally);
      for (let i = 0; i < 7; i++) {
        await tally.postTransaction(ledger, `t-${i}`, pay(`acct-${i}`, i + 1));
        await tally.putDocument(`page-${ledger}`, `k-${i}`, { i });
      }
      const read = { afterLastWrite: true, pageSize: 3 };
      const accounts = await collect(tally.accounts(ledger, { prefix: "acct-", ...read }));
      assert.deepEqual(
        accounts.map((a) => a.account),
        [...Array(7).keys()].map((i) => `acct-${i}`),
      );
      for (let i = 0; i < 6; i++) await tally.postTransaction(ledger, `t-0-${i}`, pay("acct-0", 1));
      const statement = await collect(tally.statement(ledger, "acct-0", read));
      assert.deepEqual(
        statement.map((l) => amount(l.balanceAfter)),
        [7n, 6n, 5n, 4n, 3n, 2n, 1n], // newest first
      );
      const documents = await collect(tally.documents(`page-${ledger}`, read));
      assert.deepEqual(
        documents.map((d) => d.value),
        [...Array(7).keys()].map((i) => ({ i })),
      );
      const versions = (await collect(tally.events({ stream: ledger, ...read }))).map((e) => Number(e.streamVersion));
      assert.deepEqual(
        versions,
        [...Array(1 + 7 + 6).keys()].map((i) => i + 1),
      );
    });

    for (const acrossStreams of [false, true]) {
      test(`following ${acrossStreams ? "across streams" : "a stream"} resumes after a dropped connection, missing and repeating nothing`, async (t) => {
        if (!requireServer(t)) return;
        const writer = client();
        const ledger = await freshLedger(writer);
        const writes = 30;
        const proxy = await Proxy.start(address);
        const seen: number[] = []; // the ledger's stream versions, as received
        const ids: string[] = []; // every event received (across streams: other ledgers' too)
        const stop = new AbortController();
        const follower = client({}, proxy.address);
        const following = (async () => {
          const events = follower.follow(acrossStreams ? { signal: stop.signal } : { stream: ledger, signal: stop.signal });
          for await (const event of events) {
            ids.push(event.eventId);
            if (event.eventId.startsWith(`sdk/${ledger}@`)) {
              seen.push(Number(event.streamVersion));
              if (seen.length % 7 === 0) proxy.cut(); // the call drops; follow() resumes after this event
            }
            if (seen.length === writes + 1) return;
          }
        })();
        let timer: NodeJS.Timeout | undefined;
        try {
          for (let i = 0; i < writes; i++) await writer.postTransaction(ledger, `t-${i}`, pay("alice", 1));
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`follow() saw ${seen.length} events of ${writes + 1}`)), 60_000);
          });
          await Promise.race([following, timeout]);
        } finally {
          clearTimeout(timer);
          stop.abort();
          proxy.close();
        }
        // It reconnected (events already buffered when a cut lands need no new call, so not
        // necessarily once per cut).
        assert.ok(proxy.connections >= 2, `${proxy.connections} connections`);
        assert.deepEqual(
          seen,
          [...Array(writes + 1).keys()].map((i) => i + 1),
        );
        assert.equal(new Set(ids).size, ids.length);
      });
    }

    test("a refusal's reason and metadata surface in TallyError", async (t) => {
      if (!requireServer(t)) return;
      const tally = client();
      const ledger = await freshLedger(tally);
      await tally.openAccount(ledger, "alice", { limits: [{ asset: USD, minBalance: 0 }] });
      await tally.postTransaction(ledger, "t-1", pay("alice", 100));
      await assert.rejects(tally.postTransaction(ledger, "t-2", pay("bob", 101, "alice")), (e: TallyError) => {
        assert.ok(e instanceof TallyError);
        assert.equal(e.code, Code.FailedPrecondition);
        assert.equal(e.reason, "INSUFFICIENT_FUNDS");
        assert.equal(e.metadata.http_status, "422");
        assert.ok(e.metadata.position);
        assert.match(e.message, /alice/);
        return true;
      });
      await assert.rejects(tally.getAccount(ledger, "nobody", { afterLastWrite: true }), (e: TallyError) => {
        assert.deepEqual([e.code, e.reason], [Code.NotFound, "NOT_FOUND"]);
        return true;
      });
      // A wrong credential: refused, not retried, nothing written.
      const stranger = new Client(`http://${address}`, "tly_nobody_0000", { protocol });
      await assert.rejects(stranger.defineAsset(ledger, "EUR/2"), (e: TallyError) => {
        assert.equal(e.code, Code.Unauthenticated);
        return true;
      });
    });

    test("amounts at the i128 limit round-trip exactly", async (t) => {
      if (!requireServer(t)) return;
      const tally = client();
      const ledger = await freshLedger(tally);
      const answer = await tally.postTransaction(ledger, "t-max", pay("alice", I128_MAX));
      type Posted = { stream_version: unknown; body: { TransactionPosted: { postings: { amount: bigint }[] } } };
      const event = parseEvent(answer.event) as Posted;
      assert.equal(event.body.TransactionPosted.postings[0]!.amount, I128_MAX);
      assert.equal(typeof event.stream_version, "number"); // small integers stay numbers

      const read = { position: answer.position };
      const alice = await tally.getAccount(ledger, "alice", read);
      const world = await tally.getAccount(ledger, "world", read);
      assert.equal(amount(alice.balances[0]!.posted), I128_MAX);
      assert.equal(amount(world.balances[0]!.posted), -I128_MAX);
      const transaction = await tally.getTransaction(ledger, "t-max", read);
      assert.equal(amount(transaction.postings[0]!.amount), I128_MAX);
      const [line] = await collect(tally.statement(ledger, "alice", read));
      assert.deepEqual([amount(line!.amount), amount(line!.balanceAfter)], [I128_MAX, I128_MAX]);

      await assert.rejects(tally.postTransaction(ledger, "t-more", pay("alice", 1)), (e: TallyError) => {
        assert.deepEqual([e.code, e.reason], [Code.OutOfRange, "OVERFLOW"]);
        return true;
      });
    });
  });
}

test("a write answered PENDING settles to its final answer", async (t) => {
  const binary = process.env.TALLY_BIN;
  if (!binary) return t.skip("TALLY_BIN is not set");
  // A server whose wait for an answer is 1 ms: nearly every write comes back PENDING.
  const dir = mkdtempSync(join(tmpdir(), "tally-ts-pending-"));
  const sha256 = createHash("sha256").update(TOKEN).digest("hex");
  writeFileSync(join(dir, "keys.toml"), `[[key]]\nid = "sdk-test"\ntenant = "sdk"\nsha256 = "${sha256}"\nroles = ["read", "write"]\n`);
  const args = ["dev", "--kafka-port", "0", "--http-listen", "127.0.0.1:0", "--query-listen", "127.0.0.1:0"];
  args.push("--grpc-listen", "127.0.0.1:0", "--api-keys", join(dir, "keys.toml"), "--http-wait-ms", "1");
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "ignore"] });
  try {
    let stdout = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    const deadline = Date.now() + 60_000;
    while (!stdout.includes("grpc: ")) {
      assert.ok(Date.now() < deadline, "tally dev did not print its gRPC address");
      await sleep(100);
    }
    const at = stdout.split("\n").find((l) => l.startsWith("grpc: "))!.slice(6).trim();
    const tally = new Client(`http://${at}`, TOKEN);
    let pending = 0;
    for (let i = 0; i < 5; i++) {
      const sent = await tally.defineAsset(`pending-${i}`, USD);
      if (Client.pending(sent)) pending += 1;
      const answer = await tally.settle(sent);
      assert.equal(answer.status, CommandStatus.ACCEPTED);
      assert.equal(answer.commandId, sent.commandId);
      assert.ok(answer.position && tally.lastPosition === answer.position);
      // The same answer the projections keep for the command.
      const kept = await tally.getOutcome(answer.commandId, `pending-${i}`, { position: answer.position });
      assert.equal(kept.event, answer.event);
    }
    assert.ok(pending > 0, "no write came back PENDING: the test tested nothing");
  } finally {
    child.kill("SIGTERM");
  }
});

// No server needed below: a closed port (nothing listens on port 9), so whatever is refused is
// refused before a call is made, and what is sent fails UNAVAILABLE.
const CLOSED = "http://127.0.0.1:9";

test("amounts must be integers in the i128 range, checked before anything is sent", async () => {
  const tally = new Client(CLOSED, TOKEN, { retries: 0 });
  await assert.rejects(tally.postTransaction("main", "t-1", pay("alice", I128_MAX + 1n)), RangeError);
  await assert.rejects(tally.postTransaction("main", "t-1", pay("alice", 2.5)), TypeError);
  await assert.rejects(tally.postTransaction("main", "t-1", pay("alice", 2 ** 53)), TypeError);
  await assert.rejects(tally.postTransaction("main", "t-1", pay("alice", "250" as unknown as number)), TypeError);
  await assert.rejects(tally.commitPending("main", "t-1", [-(2n ** 127n) - 1n]), RangeError);
});

test("documents, metadata, counts and options are checked before anything is sent", async () => {
  const tally = new Client(CLOSED, TOKEN, { retries: 0 });
  const notDocuments: unknown[] = ["hello", [1, 2], 5, null, { a: 10n }, { f: () => 1 }, { a: new Date(0) }];
  notDocuments.push({ a: undefined }, { a: NaN }, { a: [Infinity] }, { nested: { deeper: [{ x: 1n }] } });
  for (const value of notDocuments) {
    await assert.rejects(tally.putDocument("config", "k", value as object), TypeError, String(value));
  }
  const badMetadata: unknown[] = [{ a: 1 }, { a: null }, { a: { b: 1 } }, ["a"]];
  for (const metadata of badMetadata) {
    const fields = { metadata: metadata as Record<string, string> };
    await assert.rejects(tally.postTransaction("main", "t-1", pay("alice", 1), fields), TypeError);
    await assert.rejects(tally.openAccount("main", "alice", fields), TypeError);
  }
  for (const size of [0, -1, 1.5, 2 ** 32, NaN, Infinity]) {
    await assert.rejects(collect(tally.accounts("main", { pageSize: size })), /pageSize/);
  }
  for (const timeout of [-1, 1.5, 2n ** 64n]) {
    await assert.rejects(tally.postTransaction("main", "t-1", pay("alice", 1), { pendingTimeoutMs: timeout }), /pendingTimeoutMs/);
  }
  for (const after of [-1, 1.5, 2n ** 64n]) {
    await assert.rejects(collect(tally.follow({ stream: "main", after })), /after/);
  }
  await assert.rejects(tally.putDocument("config", "k", { a: 1 }, { ifMatch: -1 }), RangeError);
  await assert.rejects(tally.defineAsset("main", "USD/2", { idempotencyKey: "a\nb" }), TypeError);
  for (const options of [{ retries: NaN }, { retries: -1 }, { retries: 1.5 }, { timeoutMs: 0 }, { timeoutMs: NaN }]) {
    assert.throws(() => new Client(CLOSED, TOKEN, options), /retries|timeoutMs/, String(Object.entries(options)));
  }
  assert.throws(() => new Client(CLOSED, "tly_a\nb"), TypeError);
});

test("a write that fails carries its idempotency key, to be sent again or asked about", async () => {
  const tally = new Client(CLOSED, TOKEN, { retries: 1 });
  await assert.rejects(tally.defineAsset("main", "USD/2"), (e: TallyError) => {
    assert.equal(e.code, Code.Unavailable);
    assert.match(e.commandId ?? "", /^[0-9a-f-]{36}$/);
    assert.ok(e.cause instanceof ConnectError);
    return true;
  });
  await assert.rejects(tally.defineAsset("main", "USD/2", { idempotencyKey: "mine" }), (e: TallyError) => {
    assert.equal(e.commandId, "mine");
    return true;
  });
});

test("an aborted signal stops calls and subscriptions with CANCELED", async () => {
  const tally = new Client(CLOSED, TOKEN);
  const stopped = new AbortController();
  stopped.abort("done");
  const canceled = (e: TallyError) => e instanceof TallyError && e.code === Code.Canceled && e.cause === "done";
  await assert.rejects(collect(tally.follow({ stream: "main", signal: stopped.signal })), canceled);
  await assert.rejects(tally.defineAsset("main", "USD/2", { signal: stopped.signal }), canceled);
  // Aborted during the backoff between attempts: at once, not after the remaining retries.
  const later = new AbortController();
  setTimeout(() => later.abort("done"), 150);
  const started = Date.now();
  await assert.rejects(collect(tally.follow({ stream: "main", signal: later.signal })), canceled);
  assert.ok(Date.now() - started < 1_000);
});

test("a quiet subscription survives a proxy that cuts idle connections, for longer than its retries", async (t) => {
  if (!requireServer(t)) return;
  const writer = new Client(`http://${address}`, TOKEN);
  const ledger = await freshLedger(writer); // version 1: the asset
  const proxy = await Proxy.start(address);
  const stop = new AbortController();
  // retries: 1: without the reset after a working call, the second cut would end it.
  const follower = new Client(`http://${proxy.address}`, TOKEN, { retries: 1 });
  const first = (async () => {
    for await (const event of follower.follow({ stream: ledger, after: 1, signal: stop.signal })) return event;
  })();
  try {
    for (let cut = 0; cut < 3; cut++) {
      await sleep(5_500);
      proxy.cut();
    }
    await sleep(500);
    await writer.postTransaction(ledger, "t-1", pay("alice", 1));
    const event = await first;
    assert.equal(event?.streamVersion, 2n);
    assert.ok(proxy.connections >= 4, `${proxy.connections} connections`);
  } finally {
    stop.abort();
    proxy.close();
  }
});
