/**
 * A TypeScript client for Tally's gRPC API (docs/grpc.md), over gRPC (HTTP/2) or grpc-web
 * (HTTP/1.1, what a browser speaks), built on Connect-ES and the messages generated from
 * `schemas/proto` into `src/gen`.
 *
 * Answers are the generated message types. Amounts (the string fields with the
 * `(tally.v1.json)` option) are strings holding the exact integer: `amount(text)` gives a
 * bigint. An event's `event` field is JSON text: `parseEvent(text)` parses it with integers
 * beyond 2^53 as bigints, so amounts up to i128 stay exact. Amounts given to a call are bigints
 * or safe-integer numbers.
 */

import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { parse as parseLossless, parseNumberAndBigInt } from "lossless-json";
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
 * response that ends without its status).
 */
const RESUMABLE: readonly Code[] = [...RETRYABLE, Code.Canceled, Code.Aborted, Code.Unknown, Code.Internal];
/** Backoff between attempts, in milliseconds: doubled each attempt up to the max. */
const BACKOFF_FIRST_MS = 100;
const BACKOFF_MAX_MS = 2000;

function backoff(attempt: number, signal?: AbortSignal): Promise<void> {
  const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    });
  });
}

/**
 * A refused call: its gRPC `code` and `message`, and from the status details'
 * google.rpc.ErrorInfo the `reason` (`INSUFFICIENT_FUNDS`, `NOT_FOUND`, ...) and `metadata`
 * (`http_status`, and `command_id` and `position` for a command's answer).
 */
export class TallyError extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly reason?: string,
    readonly metadata: Readonly<Record<string, string>> = {},
  ) {
    super(`${Code[code]}: ${message}${reason ? ` (${reason})` : ""}`);
    this.name = "TallyError";
  }

  /** The TallyError a Connect error stands for. */
  static from(error: ConnectError): TallyError {
    const [info] = error.findDetails(ErrorInfoSchema);
    return new TallyError(error.code, error.rawMessage, info?.reason, info?.metadata);
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
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) {
      throw new TypeError(`an amount must be a bigint or a safe integer, not ${value}`);
    }
    value = BigInt(value);
  } else if (typeof value !== "bigint") {
    throw new TypeError(`an amount must be a bigint or a safe integer, not ${typeof value}`);
  }
  if (value < I128_MIN || value > I128_MAX) {
    throw new RangeError(`amount ${value} is outside the i128 range`);
  }
  return value.toString();
}

/**
 * An event's JSON text (`CommandAnswer.event`, `Event.event`) parsed, with integers beyond
 * 2^53 as bigints (exact) and every other number as a number.
 */
export function parseEvent(text: string): unknown {
  return parseLossless(text, null, parseNumberAndBigInt);
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

/** How to reach Tally. */
export interface ClientOptions {
  /** `grpc` (HTTP/2, default) or `grpc-web` (HTTP/1.1, as a browser speaks it). */
  protocol?: "grpc" | "grpc-web";
  /** Attempts after the first for a call refused UNAVAILABLE or DEADLINE_EXCEEDED (default 3). */
  retries?: number;
  /** Time limit of each attempt of a unary call, in milliseconds (default 10,000). */
  timeoutMs?: number;
  /** Connect interceptors (tracing, logging, tests). */
  interceptors?: Interceptor[];
  /** A transport of your own (TLS options, a browser transport); overrides `protocol`. */
  transport?: Transport;
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
 * A connection to Tally's gRPC API at `baseUrl` (`http://host:port`; `https://` for TLS),
 * authenticated by `token` (an API key or JWT, sent as `authorization: Bearer <token>`).
 *
 * Writes send an `idempotency-key` (a fresh UUID per call unless given) and are tried again
 * with the same key when refused UNAVAILABLE or DEADLINE_EXCEEDED, so they are made once.
 * Reads take the position of a write to see it.
 */
export class Client {
  /** The position of the last write this client made (undefined before the first). */
  lastPosition?: string;
  readonly retries: number;
  readonly timeoutMs: number;
  private readonly commands;
  private readonly queries;
  private readonly authorization: string;

  constructor(baseUrl: string, token: string, options: ClientOptions = {}) {
    const interceptors = options.interceptors ?? [];
    const transport =
      options.transport ??
      (options.protocol === "grpc-web"
        ? createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors })
        : createGrpcTransport({ baseUrl, interceptors }));
    this.commands = createClient(Commands, transport);
    this.queries = createClient(Queries, transport);
    this.authorization = token.startsWith("Bearer ") ? token : `Bearer ${token}`;
    this.retries = options.retries ?? 3;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  private async call<T>(
    method: Method<T>,
    headers: Headers,
    signal?: AbortSignal,
  ): Promise<[T, globalThis.Headers | undefined]> {
    for (let attempt = 0; ; attempt++) {
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
    if (options.keyed !== false) headers["idempotency-key"] = options.idempotencyKey ?? crypto.randomUUID();
    if (options.ifMatch !== undefined) headers["if-match"] = String(options.ifMatch);
    if (options.createOnly) headers["if-none-match"] = "*";
    const [answer, answered] = await this.call(method, headers, options.signal);
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
    const headers: Headers = position ? { "tally-position": position } : {};
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
    const request = { ledger, account, limits: limits(fields.limits), metadata: fields.metadata };
    return this.write((o) => this.commands.openAccount(request, o), options);
  }

  async updateAccount(
    ledger: string,
    account: string,
    fields: { limits?: LimitInput[]; metadata?: Record<string, string> } = {},
    options: WriteOptions = {},
  ): Promise<CommandAnswer> {
    const request = { ledger, account, limits: limits(fields.limits), metadata: fields.metadata };
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
    const request = {
      ledger,
      txId,
      postings: postings.map(posting),
      metadata: fields.metadata,
      pendingTimeoutMs: optionalBigInt(fields.pendingTimeoutMs),
    };
    return this.write((o) => this.commands.postTransaction(request, o), options);
  }

  /**
   * Posts several transactions. Sent without an idempotency key (the server refuses one): each
   * transaction's id is its key, so a retry gets the first answers.
   */
  async postBatch(ledger: string, transactions: BatchTransactionInput[], options: { signal?: AbortSignal } = {}): Promise<BatchAnswer> {
    const request = {
      ledger,
      transactions: transactions.map((t) => ({
        txId: t.txId,
        postings: t.postings.map(posting),
        metadata: t.metadata,
        pendingTimeoutMs: optionalBigInt(t.pendingTimeoutMs),
      })),
    };
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
    const request = { ledger, originalTxId, txId, metadata: fields.metadata };
    return this.write((o) => this.commands.reverse(request, o), options);
  }

  async putDocument(docType: string, key: string, value: JsonObject, options: DocumentWriteOptions = {}): Promise<CommandAnswer> {
    return this.write((o) => this.commands.putDocument({ docType, key, value }, o), options);
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

  accounts(ledger: string, options: ListOptions & { prefix?: string } = {}): AsyncGenerator<Account> {
    const request = { ledger, prefix: options.prefix ?? "", limit: options.pageSize ?? 0 };
    return this.items((cursor, o) => this.queries.listAccounts({ ...request, cursor }, o), options);
  }

  /** An account's statement lines, newest first. */
  statement(ledger: string, account: string, options: ListOptions & { asset?: string } = {}): AsyncGenerator<StatementLine> {
    const request = { ledger, account, asset: options.asset ?? "", limit: options.pageSize ?? 0 };
    return this.items((cursor, o) => this.queries.getStatement({ ...request, cursor }, o), options);
  }

  /** Documents of a type, by key prefix and top-level field equalities (`{NAME: VALUE}`). */
  documents(
    docType: string,
    options: ListOptions & { prefix?: string; field?: Record<string, string> } = {},
  ): AsyncGenerator<Document> {
    const request = { docType, prefix: options.prefix ?? "", field: options.field, limit: options.pageSize ?? 0 };
    return this.items((cursor, o) => this.queries.listDocuments({ ...request, cursor }, o), options);
  }

  /** Events of one stream, or (no `stream`) across the tenant's streams by time. */
  events(
    options: ListOptions & { stream?: string; type?: string; from?: string; to?: string } = {},
  ): AsyncGenerator<Event> {
    const request = {
      stream: options.stream ?? "",
      type: options.type ?? "",
      from: options.from ?? "",
      to: options.to ?? "",
      limit: options.pageSize ?? 0,
    };
    return this.items((cursor, o) => this.queries.searchEvents({ ...request, cursor }, o), options);
  }

  /**
   * Yields events as they are projected, without end: one stream's from after version `after`,
   * or (no `stream`) every stream's, or `docType`'s documents', from after the event whose
   * `resume` token is given. When the call drops (the connection breaks, UNAVAILABLE) or ends, it calls again from
   * after the last event received, so each event is seen once; it throws a TallyError after
   * `retries` failed attempts in a row, or on any other error. Stop it with `signal`, or by
   * leaving the `for await` loop.
   */
  async *follow(options: FollowOptions = {}): AsyncGenerator<Event> {
    let after = optionalBigInt(options.after);
    let resume = options.resume ?? "";
    const stream = options.stream ?? "";
    for (let attempt = 0; ; attempt++) {
      const request = { stream, docType: options.docType ?? "", type: options.type ?? "", after, resume };
      const local = new AbortController();
      const stop = () => local.abort(options.signal?.reason);
      options.signal?.addEventListener("abort", stop);
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
        const refused = ConnectError.from(error);
        if (options.signal?.aborted) throw options.signal.reason;
        if (!RESUMABLE.includes(refused.code) || attempt >= this.retries) throw TallyError.from(refused);
      } finally {
        options.signal?.removeEventListener("abort", stop);
        local.abort(); // ends the call when the caller leaves the loop
      }
      await backoff(attempt, options.signal);
    }
  }

  /** Whether `answer` is a command's answer that is still PENDING (poll with getCommand). */
  static pending(answer: CommandAnswer): boolean {
    return answer.status === CommandStatus.PENDING;
  }
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

function optionalBigInt(value?: bigint | number): bigint | undefined {
  return value === undefined ? undefined : BigInt(value);
}
