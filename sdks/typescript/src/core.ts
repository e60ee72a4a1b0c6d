/**
 * The client of Tally's gRPC API (docs/grpc.md) over any Connect transport, with no Node
 * imports (a browser bundle takes this module and a transport of `@connectrpc/connect-web`);
 * `index.ts` builds Node's gRPC and grpc-web transports around it.
 *
 * Answers are the generated message types. Amounts (the string fields with the
 * `(tally.v1.json)` option) are strings holding the exact integer: `amount(text)` gives a
 * bigint. An event's `event` field is JSON text: `parseEvent(text)` parses it with integers
 * beyond 2^53 as bigints, so amounts up to i128 stay exact. Everything given to a call is
 * checked before anything is sent (TypeError, RangeError): amounts are bigints or safe-integer
 * numbers in i128's range, counts are integers in their field's range, metadata values are
 * strings, a document is a plain JSON object.
 */

import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { parse as parseLossless } from "lossless-json";
import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import {
  type Account,
  type BalancesAt,
  type BatchAnswer,
  CommandStatus,
  type CommandAnswer,
  Commands,
  type Document,
  type Event,
  type LimitSchema,
  Queries,
  type StatementLine,
  type Transaction,
} from "./gen/tally/v1/tally_pb.js";

export * from "./gen/tally/v1/tally_pb.js";
export { Code } from "@connectrpc/connect";

export const I128_MIN = -(2n ** 127n);
export const I128_MAX = 2n ** 127n - 1n;

/** Codes after which a call is tried again (a write with the same idempotency key). */
const RETRYABLE: readonly Code[] = [Code.Unavailable, Code.DeadlineExceeded];
/**
 * Codes after which a subscription resumes (it is a read, so any break of the connection is
 * safe to resume from): besides RETRYABLE, a dropped connection surfaces as CANCELED (an HTTP/2
 * stream reset), ABORTED (an HTTP/1.1 response cut short, grpc-web), or UNKNOWN / INTERNAL (a
 * response that ends without its status). Everything a call sends is checked before, so an
 * INTERNAL is not the client's own encoding failing.
 */
const RESUMABLE: readonly Code[] = [...RETRYABLE, Code.Canceled, Code.Aborted, Code.Unknown, Code.Internal];
/**
 * A subscription's call that lasted this long before it broke was a working one: the count of
 * failed attempts starts over (a quiet stream behind a proxy that cuts idle connections
 * resumes for ever; a server that refuses every call is given up on after `retries`).
 */
const WORKING_CALL_MS = 5_000;
/** Backoff between attempts, in milliseconds: doubled each attempt up to the max. */
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 2000;

/** Waits before attempt `attempt + 1`; rejects with a CANCELED TallyError if `signal` aborts. */
function backoff(attempt: number, signal?: AbortSignal): Promise<void> {
  return pause(Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt), signal);
}

/**
 * A refused call: its gRPC `code` and `message`, and from the status details'
 * google.rpc.ErrorInfo the `reason` (`INSUFFICIENT_FUNDS`, `NOT_FOUND`, ...) and `metadata`
 * (`http_status`, and `command_id` and `position` for a command's answer).
 */
export class TallyError extends Error {
  /**
   * For a write: the idempotency key it was sent with (its command id). A write that failed
   * UNAVAILABLE or DEADLINE_EXCEEDED may still have been made: send it again with this key
   * (it is made at most once), or ask `getOutcome(commandId, stream)`.
   */
  commandId?: string;

  constructor(
    readonly code: Code,
    message: string,
    readonly reason?: string,
    readonly metadata: Readonly<Record<string, string>> = {},
    options?: { cause?: unknown },
  ) {
    super(`${Code[code]}: ${message}${reason ? ` (${reason})` : ""}`, options);
    this.name = "TallyError";
  }

  /** The TallyError a Connect error stands for (the Connect error is its `cause`). */
  static from(error: ConnectError): TallyError {
    const [info] = error.findDetails(ErrorInfoSchema);
    return new TallyError(error.code, error.rawMessage, info?.reason, info?.metadata, { cause: error });
  }

  /** CANCELED, for a call stopped by `signal` (whose reason is the cause). */
  static canceled(signal?: AbortSignal): TallyError {
    return new TallyError(Code.Canceled, "stopped by its signal", undefined, {}, { cause: signal?.reason });
  }
}

/** An amount given to a call: an integer in i128's range. */
export type AmountInput = bigint | number;

/** An amount as the API carries it (decimal text of the exact integer) as a bigint. */
export function amount(text: string): bigint {
  return BigInt(text);
}

/** Decimal text of `value`, checked to be an integer in i128's range (TypeError, RangeError). */
export function amountText(value: AmountInput): string {
  return integerText(value, I128_MIN, I128_MAX, "an amount");
}

/** Decimal text of the integer `value` in `[min, max]` (`what` names it in errors). */
function integerText(value: bigint | number, min: bigint, max: bigint, what: string): string {
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) {
      throw new TypeError(`${what} must be a bigint or a safe integer, not ${value}`);
    }
    value = BigInt(value);
  } else if (typeof value !== "bigint") {
    throw new TypeError(`${what} must be a bigint or a safe integer, not ${typeof value}`);
  }
  if (value < min || value > max) {
    throw new RangeError(`${what} must be in [${min}, ${max}], not ${value}`);
  }
  return value.toString();
}

const U32_MAX = 2n ** 32n - 1n;
const U64_MAX = 2n ** 64n - 1n;

/** `value` as a bigint, checked to be an integer in u64's range; undefined stays undefined. */
function u64(value: bigint | number | undefined, what: string): bigint | undefined {
  return value === undefined ? undefined : BigInt(integerText(value, 0n, U64_MAX, what));
}

/** A page size: a positive u32, or 0 (the server's default) when absent. */
function pageSize(value: number | undefined): number {
  return value === undefined ? 0 : Number(integerText(value, 1n, U32_MAX, "pageSize"));
}

/** `metadata`, checked to map strings to strings (TypeError). */
function metadataOf(metadata: Record<string, string> | undefined): Record<string, string> | undefined {
  if (metadata === undefined) return undefined;
  if (!isPlainObject(metadata)) throw new TypeError("metadata must be an object of strings");
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== "string") throw new TypeError(`metadata ${key} must be a string, not ${typeof value}`);
  }
  return metadata;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/**
 * `value` checked to be what a document can hold, a plain JSON object (TypeError otherwise:
 * a bigint, a function, a Date, undefined, NaN or an infinity would be changed on the way).
 */
function documentOf(value: object): JsonObject {
  const check = (v: unknown, at: string): void => {
    if (v === null || typeof v === "string" || typeof v === "boolean") return;
    if (typeof v === "number") {
      if (!Number.isFinite(v)) throw new TypeError(`${at} is ${v}: JSON has no such number`);
      return;
    }
    if (Array.isArray(v)) return v.forEach((item, i) => check(item, `${at}[${i}]`));
    if (isPlainObject(v)) return Object.entries(v).forEach(([k, item]) => check(item, `${at}.${k}`));
    const kind = v === undefined ? "undefined" : typeof v === "object" ? v.constructor?.name : typeof v;
    throw new TypeError(`${at} is ${kind}: a document holds only JSON values`);
  };
  if (!isPlainObject(value)) throw new TypeError("a document must be a plain JSON object");
  check(value, "value");
  return value as JsonObject;
}

/** A header value, checked to be visible ASCII (a newline would break the request). */
function headerValue(value: string, what: string): string {
  if (typeof value !== "string" || !/^[\x21-\x7e]+$/.test(value)) {
    throw new TypeError(`${what} must be visible ASCII characters without spaces`);
  }
  return value;
}

/**
 * An event's JSON text (`CommandAnswer.event`, `Event.event`) parsed, with integers beyond
 * 2^53 as bigints (exact) and every other number as a number.
 */
export function parseEvent(text: string): unknown {
  return parseLossless(text, null, (number) => {
    const exact = Number(number);
    return /^-?\d+$/.test(number) && !Number.isSafeInteger(exact) ? BigInt(number) : exact;
  });
}

/** A posting of a transaction to write. */
export interface PostingInput {
  source: string;
  destination: string;
  asset: string;
  amount: AmountInput;
}

/** A lower limit of an account in an asset (`minBalance` absent: none). */
export interface LimitInput {
  asset: string;
  minBalance?: AmountInput;
}

/** A transaction of a batch. */
export interface BatchTransactionInput {
  txId: string;
  postings: PostingInput[];
  metadata?: Record<string, string>;
  pendingTimeoutMs?: bigint | number;
}

/** Options of a write. */
export interface WriteOptions {
  /** The command's id; default a fresh UUID per call, kept across its retries. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

/** Options of a document write. */
export interface DocumentWriteOptions extends WriteOptions {
  /** Write only if the document is at this version (`if-match`). */
  ifMatch?: bigint | number;
  /** Write only if the document does not exist yet (`if-none-match: *`). */
  createOnly?: boolean;
}

/** Options of a read. */
export interface ReadOptions {
  /** A write's position: the read waits until it sees that write (`tally-position`). */
  position?: string;
  /** Use the position of this client's last write. */
  afterLastWrite?: boolean;
  signal?: AbortSignal;
}

/** Options of a list read: `pageSize` items per page (absent: the server's default). */
export interface ListOptions extends ReadOptions {
  pageSize?: number;
}

/** What to follow: one stream, every stream of the tenant, or one document type's. */
export interface FollowOptions {
  /** A ledger id or `state/TYPE/KEY`; absent: across streams. */
  stream?: string;
  /** Without `stream`: only the events of documents of this type. */
  docType?: string;
  /** Kinds of event, comma-separated. */
  type?: string;
  /** With `stream`: start after this stream version (absent: from the first event). */
  after?: bigint | number;
  /** Without `stream`: resume after the event whose `resume` token this is. */
  resume?: string;
  /** Stops following (the iterator ends with the signal's reason). */
  signal?: AbortSignal;
}

/** How the client calls (RangeError when out of range). */
export interface CallPolicy {
  /**
   * Attempts after the first for a call refused UNAVAILABLE or DEADLINE_EXCEEDED, and for a
   * subscription, failed calls in a row before it gives up (an integer >= 0, default 3).
   */
  retries?: number;
  /** Time limit of each attempt of a unary call, in milliseconds (> 0, default 10,000). */
  timeoutMs?: number;
}

type Headers = Record<string, string>;

/** What a call is given: its headers, time limit, abort signal, and a hook for the answer's headers. */
interface CallOptions {
  headers: Headers;
  timeoutMs: number;
  signal?: AbortSignal;
  onHeader: (headers: globalThis.Headers) => void;
}

/** A generated client's method with its request bound. */
type Method<T> = (options: CallOptions) => Promise<T>;

/**
 * A client of Tally's gRPC API over `transport`, authenticated by `token` (an API key or JWT,
 * sent as `authorization: Bearer <token>`). In Node, `Client` of `index.ts` builds the
 * transport from an address.
 *
 * Writes send an `idempotency-key` (a fresh UUID per call unless given) and are tried again
 * with the same key when refused UNAVAILABLE or DEADLINE_EXCEEDED, so they are made once.
 * Reads take the position of a write to see it.
 */
export class TallyClient {
  /** The position of the last write this client made (undefined before the first). */
  lastPosition?: string;
  readonly retries: number;
  readonly timeoutMs: number;
  private readonly commands;
  private readonly queries;
  private readonly authorization: string;

  constructor(transport: Transport, token: string, policy: CallPolicy = {}) {
    this.commands = createClient(Commands, transport);
    this.queries = createClient(Queries, transport);
    const bare = headerValue(token.replace(/^Bearer /, ""), "the token");
    this.authorization = `Bearer ${bare}`;
    this.retries = Number(integerText(policy.retries ?? 3, 0n, 1000n, "retries"));
    const timeoutMs = policy.timeoutMs ?? 10_000;
    if (!(Number.isFinite(timeoutMs) && timeoutMs > 0)) {
      throw new RangeError(`timeoutMs must be a positive number of milliseconds, not ${timeoutMs}`);
    }
    this.timeoutMs = timeoutMs;
  }

  private async call<T>(
    method: Method<T>,
    headers: Headers,
    signal?: AbortSignal,
  ): Promise<[T, globalThis.Headers | undefined]> {
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw TallyError.canceled(signal);
      let answered: globalThis.Headers | undefined;
      try {
        const answer = await method({
          headers: { authorization: this.authorization, ...headers },
          timeoutMs: this.timeoutMs,
          signal,
          onHeader: (h) => (answered = h),
        });
        return [answer, answered];
      } catch (error) {
        const refused = ConnectError.from(error);
        if (!RETRYABLE.includes(refused.code) || attempt >= this.retries || signal?.aborted) {
          throw TallyError.from(refused);
        }
      }
      await backoff(attempt, signal);
    }
  }

  private async write<T extends CommandAnswer | BatchAnswer>(
    method: Method<T>,
    options: DocumentWriteOptions & { keyed?: boolean },
  ): Promise<T> {
    const headers: Headers = {};
    const key = options.keyed === false ? undefined : (options.idempotencyKey ?? crypto.randomUUID());
    if (key !== undefined) headers["idempotency-key"] = headerValue(key, "idempotencyKey");
    if (options.ifMatch !== undefined) headers["if-match"] = integerText(options.ifMatch, 0n, U64_MAX, "ifMatch");
    if (options.createOnly) headers["if-none-match"] = "*";
    let answer: T;
    let answered: globalThis.Headers | undefined;
    try {
      [answer, answered] = await this.call(method, headers, options.signal);
    } catch (error) {
      if (error instanceof TallyError) error.commandId = key;
      throw error;
    }
    // A batch's answer has no position of its own: its last command's is the latest.
    const outcomes: CommandAnswer[] =
      answer.$typeName === "tally.v1.BatchAnswer"
        ? answer.results.flatMap((r) => (r.outcome ? [r.outcome] : []))
        : [answer];
    const position = answered?.get("tally-position") || outcomes.map((o) => o.position).findLast((p) => p);
    if (position) this.lastPosition = position;
    return answer;
  }

  private async read<T>(
    method: Method<T>,
    options: ReadOptions,
  ): Promise<T> {
    const position = options.position ?? (options.afterLastWrite ? this.lastPosition : undefined);
    const headers: Headers = position ? { "tally-position": headerValue(position, "position") } : {};
    return (await this.call(method, headers, options.signal))[0];
  }

  private async *items<T>(
    page: (cursor: string, options: CallOptions) => Promise<{ items: T[]; nextCursor: string }>,
    options: ReadOptions,
  ): AsyncGenerator<T> {
    let cursor = "";
    do {
      const answer = await this.read((o) => page(cursor, o), options);
      yield* answer.items;
      cursor = answer.nextCursor;
    } while (cursor);
  }

  // --- Writes: each returns the command's answer; `lastPosition` is then the write's. ---

  async defineAsset(ledger: string, asset: string, options: WriteOptions = {}): Promise<CommandAnswer> {
    return this.write((o) => this.commands.defineAsset({ ledger, asset }, o), options);
  }

  async openAccount(
    ledger: string,
    account: string,
    fields: { limits?: LimitInput[]; metadata?: Record<string, string> } = {},
    options: WriteOptions = {},
  ): Promise<CommandAnswer> {
    const request = accountRequest(ledger, account, fields);
    return this.write((o) => this.commands.openAccount(request, o), options);
  }

  async updateAccount(
    ledger: string,
    account: string,
    fields: { limits?: LimitInput[]; metadata?: Record<string, string> } = {},
    options: WriteOptions = {},
  ): Promise<CommandAnswer> {
    const request = accountRequest(ledger, account, fields);
    return this.write((o) => this.commands.updateAccount(request, o), options);
  }

  async closeAccount(ledger: string, account: string, options: WriteOptions = {}): Promise<CommandAnswer> {
    return this.write((o) => this.commands.closeAccount({ ledger, account }, o), options);
  }

  /** Posts `postings` now, or holds them as pending for `pendingTimeoutMs` (1 ms to 30 days). */
  async postTransaction(
    ledger: string,
    txId: string,
    postings: PostingInput[],
    fields: { metadata?: Record<string, string>; pendingTimeoutMs?: bigint | number } = {},
    options: WriteOptions = {},
  ): Promise<CommandAnswer> {
    const request = { ledger, ...transaction({ txId, postings, ...fields }) };
    return this.write((o) => this.commands.postTransaction(request, o), options);
  }

  /**
   * Posts several transactions. Sent without an idempotency key (the server refuses one): each
   * transaction's id is its key, so a retry gets the first answers.
   */
  async postBatch(ledger: string, transactions: BatchTransactionInput[], options: { signal?: AbortSignal } = {}): Promise<BatchAnswer> {
    const request = { ledger, transactions: transactions.map(transaction) };
    return this.write((o) => this.commands.postBatch(request, o), { ...options, keyed: false });
  }

  /** Commits a pending transaction: everything held, or per posting the `amounts` given. */
  async commitPending(ledger: string, txId: string, amounts: AmountInput[] = [], options: WriteOptions = {}): Promise<CommandAnswer> {
    const request = { ledger, txId, amounts: amounts.map(amountText) };
    return this.write((o) => this.commands.commitPending(request, o), options);
  }

  async voidPending(ledger: string, txId: string, options: WriteOptions = {}): Promise<CommandAnswer> {
    return this.write((o) => this.commands.voidPending({ ledger, txId }, o), options);
  }

  /** Reverses the posted transaction `originalTxId` with a new transaction `txId`. */
  async reverse(
    ledger: string,
    originalTxId: string,
    txId: string,
    fields: { metadata?: Record<string, string> } = {},
    options: WriteOptions = {},
  ): Promise<CommandAnswer> {
    const request = { ledger, originalTxId, txId, metadata: metadataOf(fields.metadata) };
    return this.write((o) => this.commands.reverse(request, o), options);
  }

  /** Writes `value`, a plain JSON object (checked: TypeError), as the document `docType/key`. */
  async putDocument(docType: string, key: string, value: object, options: DocumentWriteOptions = {}): Promise<CommandAnswer> {
    const request = { docType, key, value: documentOf(value) };
    return this.write((o) => this.commands.putDocument(request, o), options);
  }

  async deleteDocument(docType: string, key: string, options: DocumentWriteOptions = {}): Promise<CommandAnswer> {
    return this.write((o) => this.commands.deleteDocument({ docType, key }, o), options);
  }

  /**
   * The answer to a command that came back PENDING, from the instance that took it: its
   * `commandId`, its stream and its fingerprint (both in the PENDING answer's `poll` route).
   */
  async getCommand(commandId: string, stream: string, fingerprint: string, options: { signal?: AbortSignal } = {}): Promise<CommandAnswer> {
    return this.read((o) => this.commands.getCommand({ commandId, stream, fingerprint }, o), options);
  }

  // --- Reads: each takes `position` or `afterLastWrite` to see a write. ---

  async getAccount(ledger: string, account: string, options: ReadOptions = {}): Promise<Account> {
    return this.read((o) => this.queries.getAccount({ ledger, account }, o), options);
  }

  async getTransaction(ledger: string, txId: string, options: ReadOptions = {}): Promise<Transaction> {
    return this.read((o) => this.queries.getTransaction({ ledger, txId }, o), options);
  }

  /** Balances at the RFC 3339 instant `at` (one asset's, or every asset's). */
  async getBalanceAt(ledger: string, account: string, at: string, options: ReadOptions & { asset?: string } = {}): Promise<BalancesAt> {
    const request = { ledger, account, at, asset: options.asset ?? "" };
    return this.read((o) => this.queries.getBalanceAt(request, o), options);
  }

  /** A command's first answer, from the projections. */
  async getOutcome(commandId: string, stream: string, options: ReadOptions = {}): Promise<CommandAnswer> {
    return this.read((o) => this.queries.getCommand({ commandId, stream }, o), options);
  }

  async getDocument(docType: string, key: string, options: ReadOptions = {}): Promise<Document> {
    return this.read((o) => this.queries.getDocument({ docType, key }, o), options);
  }

  // --- Lists: every item, page after page, following each page's cursor. ---

  async *accounts(ledger: string, options: ListOptions & { prefix?: string } = {}): AsyncGenerator<Account> {
    const request = { ledger, prefix: options.prefix ?? "", limit: pageSize(options.pageSize) };
    yield* this.items((cursor, o) => this.queries.listAccounts({ ...request, cursor }, o), options);
  }

  /** An account's statement lines, newest first. */
  async *statement(ledger: string, account: string, options: ListOptions & { asset?: string } = {}): AsyncGenerator<StatementLine> {
    const request = { ledger, account, asset: options.asset ?? "", limit: pageSize(options.pageSize) };
    yield* this.items((cursor, o) => this.queries.getStatement({ ...request, cursor }, o), options);
  }

  /** Documents of a type, by key prefix and top-level field equalities (`{NAME: VALUE}`). */
  async *documents(
    docType: string,
    options: ListOptions & { prefix?: string; field?: Record<string, string> } = {},
  ): AsyncGenerator<Document> {
    const request = { docType, prefix: options.prefix ?? "", field: options.field, limit: pageSize(options.pageSize) };
    yield* this.items((cursor, o) => this.queries.listDocuments({ ...request, cursor }, o), options);
  }

  /** Events of one stream, or (no `stream`) across the tenant's streams by time. */
  async *events(
    options: ListOptions & { stream?: string; type?: string; from?: string; to?: string } = {},
  ): AsyncGenerator<Event> {
    const request = {
      stream: options.stream ?? "",
      type: options.type ?? "",
      from: options.from ?? "",
      to: options.to ?? "",
      limit: pageSize(options.pageSize),
    };
    yield* this.items((cursor, o) => this.queries.searchEvents({ ...request, cursor }, o), options);
  }

  /**
   * Yields events as they are projected, without end: one stream's from after version `after`,
   * or (no `stream`) every stream's, or `docType`'s documents', from after the event whose
   * `resume` token is given. When the call drops (the connection breaks, UNAVAILABLE) or ends,
   * it calls again from after the last event received, so each event is seen once. It throws
   * a TallyError on a refusal (a bad token, resume token or option), after `retries` failed
   * calls in a row (a call that worked for a while before it broke does not count), and a
   * CANCELED one when `signal` aborts (at once if it already has). Leaving the `for await`
   * loop ends the call too.
   */
  async *follow(options: FollowOptions = {}): AsyncGenerator<Event> {
    const signal = options.signal;
    let after = u64(options.after, "after");
    let resume = options.resume ?? "";
    const stream = options.stream ?? "";
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw TallyError.canceled(signal);
      const request = { stream, docType: options.docType ?? "", type: options.type ?? "", after, resume };
      const local = new AbortController();
      const stop = () => local.abort(signal?.reason);
      signal?.addEventListener("abort", stop, { once: true });
      const started = Date.now();
      try {
        const events = this.queries.followEvents(request, {
          headers: { authorization: this.authorization },
          signal: local.signal,
        });
        for await (const event of events) {
          attempt = 0;
          if (stream) after = BigInt(event.streamVersion);
          else resume = event.resume;
          yield event;
        }
      } catch (error) {
        if (signal?.aborted) throw TallyError.canceled(signal);
        const refused = ConnectError.from(error);
        if (!RESUMABLE.includes(refused.code)) throw TallyError.from(refused);
        if (Date.now() - started >= WORKING_CALL_MS) attempt = 0;
        else if (attempt >= this.retries) throw TallyError.from(refused);
      } finally {
        signal?.removeEventListener("abort", stop);
        local.abort(); // ends the call when the caller leaves the loop
      }
      await backoff(attempt, signal);
    }
  }

  /** Whether `answer` is a command's answer that is still PENDING (poll with getCommand). */
  static pending(answer: CommandAnswer): boolean {
    return answer.status === CommandStatus.PENDING;
  }

  /**
   * The final answer to a write that came back PENDING (the server's wait ran out first): polls
   * the instance that took it (`getCommand` with the stream and fingerprint of its `poll`
   * route) every `intervalMs` (default 50) for at most `timeoutMs` (default 30,000), then throws
   * a DEADLINE_EXCEEDED TallyError with the write's `commandId` (send the write again with that
   * key). Any other answer comes back as it is. A poll refused NOT_FOUND means the instance
   * forgot the answer: send the write again with the same key too.
   */
  async settle(
    answer: CommandAnswer,
    options: { timeoutMs?: number; intervalMs?: number; signal?: AbortSignal } = {},
  ): Promise<CommandAnswer> {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000);
    const interval = options.intervalMs ?? 50;
    while (answer.status === CommandStatus.PENDING) {
      if (Date.now() >= deadline) {
        const late = new TallyError(Code.DeadlineExceeded, `no answer to ${answer.commandId} yet`);
        late.commandId = answer.commandId;
        throw late;
      }
      await pause(interval, options.signal);
      const poll = new URL(answer.poll, "http://poll.invalid").searchParams;
      const [stream, fingerprint] = [poll.get("stream") ?? "", poll.get("fingerprint") ?? ""];
      answer = await this.getCommand(answer.commandId, stream, fingerprint, options);
    }
    if (answer.position) this.lastPosition = answer.position;
    return answer;
  }
}

/** Waits `ms`; rejects with a CANCELED TallyError if `signal` aborts. */
function pause(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(TallyError.canceled(signal));
    const abort = () => {
      clearTimeout(timer);
      reject(TallyError.canceled(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", abort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/** An account's fields as an open or update request carries them, checked. */
function accountRequest(
  ledger: string,
  account: string,
  fields: { limits?: LimitInput[]; metadata?: Record<string, string> },
) {
  return { ledger, account, limits: limits(fields.limits), metadata: metadataOf(fields.metadata) };
}

/** A transaction's fields as a request carries them, checked. */
function transaction(t: BatchTransactionInput) {
  return {
    txId: t.txId,
    postings: t.postings.map(posting),
    metadata: metadataOf(t.metadata),
    pendingTimeoutMs: u64(t.pendingTimeoutMs, "pendingTimeoutMs"),
  };
}

function posting(p: PostingInput) {
  return { source: p.source, destination: p.destination, asset: p.asset, amount: amountText(p.amount) };
}

function limits(given?: LimitInput[]): MessageInitShape<typeof LimitSchema>[] | undefined {
  return given?.map((l) => ({
    asset: l.asset,
    minBalance: l.minBalance === undefined ? undefined : amountText(l.minBalance),
  }));
}
