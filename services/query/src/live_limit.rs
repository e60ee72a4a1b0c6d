//! A bound on open live event streams (`/v1/events/live`, and gRPC's `FollowEvents`, which is
//! served by it): each one holds a task and, while idle, reads the store every `follow_poll`,
//! so an unbounded number of them (a client reconnecting in a loop without closing, or one
//! tenant opening thousands) would take the query API's cores from every other caller.
//!
//! Two limits: per tenant (429, the caller's own doing) and in all (503, the server's
//! capacity; retried later). A stream keeps its place until it ends (the client goes away, or
//! the server stops).

use axum::http::StatusCode;
use prometheus::{IntGauge, register_int_gauge};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use tally_core::TenantId;
use tally_http::Problem;

/// Open live streams of this process (`tally_query_live_streams`).
static OPEN: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("tally_query_live_streams", "Live event streams open (SSE and gRPC FollowEvents)")
        .expect("the metric is registered once")
});

/// The open live streams, by tenant, and their limits.
pub(crate) struct LiveStreams {
    /// Most streams open at once in all.
    total_max: usize,
    /// Most streams one tenant may have open at once.
    tenant_max: usize,
    open: Mutex<HashMap<TenantId, usize>>,
}

/// One open stream's place; dropping it (when the stream ends) frees the place.
pub(crate) struct LiveSlot {
    streams: Arc<LiveStreams>,
    tenant: TenantId,
}

impl LiveStreams {
    pub(crate) fn new(total_max: usize, tenant_max: usize) -> Arc<LiveStreams> {
        // The gauge is there (at 0) before the first stream opens: an alert on it sees a series.
        LazyLock::force(&OPEN);
        Arc::new(LiveStreams { total_max, tenant_max, open: Mutex::new(HashMap::new()) })
    }

    /// A place for one more stream of `tenant`, or why there is none: 429 when the tenant has
    /// its most open, 503 when the process has.
    pub(crate) fn admit(self: &Arc<Self>, tenant: &TenantId) -> Result<LiveSlot, Problem> {
        let mut open = self.open.lock().expect("not poisoned");
        let total: usize = open.values().sum();
        let mine = open.get(tenant).copied().unwrap_or(0);
        if mine >= self.tenant_max {
            return Err(Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many live streams",
                format!("this tenant has {mine} live event streams open, the most allowed; close one first"),
            ));
        }
        if total >= self.total_max {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many live streams",
                format!("this server has {total} live event streams open, the most it serves; retry later"),
            ));
        }
        *open.entry(tenant.clone()).or_insert(0) += 1;
        OPEN.inc();
        Ok(LiveSlot { streams: self.clone(), tenant: tenant.clone() })
    }
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("not poisoned");
        if let Some(count) = open.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.tenant);
            }
        }
        OPEN.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    #[test]
    fn each_tenant_and_the_process_are_bounded_and_places_come_back() {
        let streams = LiveStreams::new(3, 2);
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let a1 = streams.admit(&acme).unwrap();
        let _a2 = streams.admit(&acme).unwrap();
        assert_eq!(streams.admit(&acme).err().map(|p| p.status), Some(429));
        let g1 = streams.admit(&globex).unwrap();
        assert_eq!(streams.admit(&globex).err().map(|p| p.status), Some(503));
        drop(a1);
        let _a3 = streams.admit(&acme).unwrap();
        drop(g1);
        let _g2 = streams.admit(&globex).unwrap();
        assert_eq!(streams.open.lock().unwrap().values().sum::<usize>(), 3);
    }
}
