//! The one bridge between async services and the store's synchronous traits
//! ([`crate::ProjectionStore`], [`crate::SnapshotStore`]): a store call may do file or network
//! I/O and must not stall tokio's workers.
//!
//! - [`blocking`]: writes, checkpoints, snapshots and anything long run on tokio's blocking pool.
//! - [`read`]: a query's short reads run in place when the backend answers from memory or a
//!   local file quickly ([`crate::ProjectionStore::reads_block`] is false), else with the worker
//!   thread handed over for the wait (`block_in_place`, Scylla), which avoids a thread hop per
//!   read on the query path.

use crate::ProjectionStore;

/// Runs `f` on tokio's blocking pool and returns its result (a panic or cancellation of the
/// task is the error `E` makes of a `JoinError`).
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<tokio::task::JoinError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

/// Runs a short read of `store` from an async handler (see the module notes). Needs tokio's
/// multi-threaded runtime when the store's reads block.
pub fn read<T, E>(
    store: &dyn ProjectionStore,
    f: impl FnOnce(&dyn ProjectionStore) -> Result<T, E>,
) -> Result<T, E> {
    match store.reads_block() {
        true => tokio::task::block_in_place(|| f(store)),
        false => f(store),
    }
}
