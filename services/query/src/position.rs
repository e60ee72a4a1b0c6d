//! Who reads, and read-your-writes. A write answers with the position of its event in the log
//! (the `Tally-Position` token, usable by the writer's tenant only: `tally_http::position`); a
//! query that sends it back waits, bounded, until the live projection covers that offset of
//! that partition, so it never reads from before the write. When the wait runs out the answer
//! is 504 with how far it got.

use crate::Query;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use tally_core::TenantId;
use tally_http::position::Position;
use tally_http::{Caller, POSITION_HEADER, Problem};

/// The caller of a query, once the projection has reached the position the request names (if
/// it names one). Every handler takes one, so each read is tenant-scoped and read-your-writes.
pub struct Reader {
    /// The caller's tenant, from the credential: every read of the request is scoped to it.
    pub tenant: TenantId,
}

impl FromRequestParts<Query> for Reader {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, query: &Query) -> Result<Reader, Problem> {
        let tenant = Caller::from_request_parts(parts, query).await?.tenant().clone();
        if let Some(token) = tally_http::header_text(&parts.headers, POSITION_HEADER)? {
            let position = Position::from_token(token, &tenant).map_err(Problem::bad_request)?;
            wait_for(query, &tenant, position).await?;
        }
        Ok(Reader { tenant })
    }
}

/// Polls the live version's checkpoint of the position's partition until it covers the
/// offset or the configured wait runs out.
async fn wait_for(query: &Query, tenant: &TenantId, position: Position) -> Result<(), Problem> {
    let deadline = tokio::time::Instant::now() + query.config().position_wait;
    loop {
        let covered = query.read(move |store| {
            let version = store.live_version()?;
            store.checkpoint(version, position.partition)
        })?;
        if covered.is_some_and(|c| c >= position.offset) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(not_yet(tenant, position, covered));
        }
        tokio::time::sleep(query.config().position_poll).await;
    }
}

fn not_yet(tenant: &TenantId, position: Position, covered: Option<i64>) -> Problem {
    let reached = match covered {
        Some(offset) => format!("has reached {}", Position { partition: position.partition, offset }),
        None => format!("has nothing of partition {} yet", position.partition),
    };
    let mut problem = Problem::new(
        StatusCode::GATEWAY_TIMEOUT,
        "not caught up",
        format!("the projection {reached}, not {position} yet; retry with the same {POSITION_HEADER}"),
    );
    problem.position = covered.map(|offset| Position { partition: position.partition, offset }.token(tenant));
    problem
}
