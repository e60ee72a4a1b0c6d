/**
 * A TypeScript client for Tally's gRPC API (docs/grpc.md) in Node, over gRPC (HTTP/2) or
 * grpc-web (HTTP/1.1, what a browser speaks): `core.ts`'s client with Node's transports of
 * Connect-ES. A browser bundle imports `@tally/client/core` instead, with a transport of
 * `@connectrpc/connect-web`.
 */

import type { Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { type CallPolicy, TallyClient } from "./core.js";

export * from "./core.js";

/** How to reach Tally from Node. */
export interface ClientOptions extends CallPolicy {
  /** `grpc` (HTTP/2, default) or `grpc-web` (HTTP/1.1, as a browser speaks it). */
  protocol?: "grpc" | "grpc-web";
  /**
   * Over gRPC, an HTTP/2 ping every this many milliseconds, so that a connection that went
   * silent (a half-open TCP connection, an open subscription whose bytes stopped coming) is
   * noticed and a subscription resumes on a new one (default 30,000; 0: no pings). grpc-web
   * over HTTP/1.1 has no pings: such a subscription waits until the OS gives up on the socket.
   */
  keepaliveMs?: number;
  /** Connect interceptors (tracing, logging, tests). */
  interceptors?: Interceptor[];
}

/**
 * A connection to Tally's gRPC API at `baseUrl` (`http://host:port`; `https://` for TLS),
 * authenticated by `token` (an API key or JWT). See `TallyClient` for what each call does.
 */
export class Client extends TallyClient {
  constructor(baseUrl: string, token: string, options: ClientOptions = {}) {
    const interceptors = options.interceptors ?? [];
    const keepaliveMs = options.keepaliveMs ?? 30_000;
    if (!(Number.isInteger(keepaliveMs) && keepaliveMs >= 0)) {
      throw new RangeError(`keepaliveMs must be a whole number of milliseconds >= 0, not ${keepaliveMs}`);
    }
    const pings = keepaliveMs > 0 ? { pingIntervalMs: keepaliveMs, pingIdleConnection: true } : {};
    const transport =
      options.protocol === "grpc-web"
        ? createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors })
        : createGrpcTransport({ baseUrl, interceptors, ...pings });
    super(transport, token, options);
  }
}
