//! What the sink runner keeps (DESIGN.md section 3, outlets): the destinations tenants
//! configured, and one delivery record per destination and events partition.
//!
//! The values are opaque bytes here: their shape belongs to `tally-sink`, which encodes them.
//! Two writers never share a value: destinations are written by the admin API only, delivery
//! records by the runner lane that owns the (destination, partition) only, so neither needs a
//! read-modify-write across processes.

use crate::StoreError;

/// Destinations and delivery records on one backend.
///
/// - A destination is stored under `(tenant, id)`; [`SinkStore::create_destination`] refuses
///   an id the tenant already uses, [`SinkStore::replace_destination`] replaces one only if it
///   still holds what the caller read (a compare-and-set: two admins changing one destination
///   at once never lose either change, the second one retries).
///   (On Scylla all three writes are lightweight transactions, never mixed with plain writes.)
/// - A delivery record is stored under `(uid, partition)`, where `uid` is the destination's
///   unique incarnation id (a destination deleted and created again under the same id has
///   another uid, so it never inherits the old one's position).
pub trait SinkStore: Send + Sync {
    /// Stores a new destination; `Ok(false)` (and nothing written) if `(tenant, id)` exists.
    fn create_destination(&self, tenant: &str, id: &str, value: &[u8]) -> Result<bool, StoreError>;
    /// Replaces the destination `(tenant, id)` with `value` if it holds `current`; `Ok(false)`
    /// (and nothing written) if it is absent or holds something else.
    fn replace_destination(
        &self,
        tenant: &str,
        id: &str,
        current: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError>;
    /// The destination `(tenant, id)`, if stored.
    fn destination(&self, tenant: &str, id: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every destination of every tenant (what a sink runner delivers to), in no set order.
    fn destinations(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// Deletes the destination `(tenant, id)`; `Ok(false)` if there was none.
    fn delete_destination(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;
    /// Every delivery record of the destination incarnation `uid`, by partition, ascending.
    fn deliveries(&self, uid: &str) -> Result<Vec<(i32, Vec<u8>)>, StoreError>;
    /// Replaces the delivery record of `uid` for `partition`.
    fn put_delivery(&self, uid: &str, partition: i32, value: &[u8]) -> Result<(), StoreError>;
    /// Deletes every delivery record of `uid` (after its destination was deleted).
    fn delete_deliveries(&self, uid: &str) -> Result<(), StoreError>;
}
