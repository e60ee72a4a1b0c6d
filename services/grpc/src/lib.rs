//! Tally's gRPC API: the services of `schemas/proto/tally/v1` (commands and queries), server
//! reflection, the standard health service, and grpc-web, on one listener.
//!
//! Each method is its HTTP route (the `tally.v1.http` option), called in-process on the very
//! router the HTTP listener serves, gate included: a gRPC caller is authenticated, rate limited,
//! authorized and judged by the response policy as the same HTTP request would be, and gets
//! the same answer. Nothing about the ledger is written twice. The request message becomes the
//! route's path, query and JSON body; the JSON answer becomes the response message; a problem
//! becomes a status with a `google.rpc.ErrorInfo` ([`status`]). The cost is one JSON encoding
//! and decoding per call, in process.

mod codec;
mod routes;
mod serve;
pub mod status;
mod transcode;

pub use serve::{Api, GrpcServer, Tls};

/// The generated client of the API (and its messages), for Rust callers and the tests.
pub mod v1 {
    tonic::include_proto!("tally.v1");
}

/// The API's file descriptor set (what reflection serves, and where the routes come from).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tally.v1.bin"));
