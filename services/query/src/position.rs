//! Who reads, and read-your-writes. A write answers with the position of its event in the log
//! (`<partition>-<offset>`, the `Tally-Position` header); a query that sends it back waits,
//! bounded, until the live projection covers that offset of that partition, so it never reads
//! from before the write. When the wait runs out the answer is 504 with how far it got.

use crate::Query;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use std::fmt;
use std::str::FromStr;
use tally_core::TenantId;
use tally_http::{POSITION_HEADER, Problem};

/// Highest partition number a position may name (Tally's topics have at most 1,024).
const PARTITION_MAX: i32 = 1023;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.partition, self.offset)
    }
}

impl FromStr for Position {
    type Err = String;

    fn from_str(s: &str) -> Result<Position, String> {
        let bad = || {
            format!(
                "{POSITION_HEADER}: {s:?} is not a position (<partition>-<offset>, as a write returned it)"
            )
        };
        let (partition, offset) = s.split_once('-').ok_or_else(bad)?;
        let partition: i32 = partition.parse().map_err(|_| bad())?;
        let offset: i64 = offset.parse().map_err(|_| bad())?;
        match (0..=PARTITION_MAX).contains(&partition) && offset >= 0 {
            true => Ok(Position { partition, offset }),
            false => Err(bad()),
        }
    }
}

/// The caller of a query, once the projection has reached the position the request names (if
/// it names one). Every handler takes one, so each read is tenant-scoped and read-your-writes.
pub struct Reader {
    pub tenant: TenantId,
}

impl FromRequestParts<Query> for Reader {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, query: &Query) -> Result<Reader, Problem> {
        let tenant = tally_http::tenant(&parts.headers)?;
        if let Some(position) = tally_http::header_text(&parts.headers, POSITION_HEADER)? {
            wait_for(query, position.parse().map_err(Problem::bad_request)?).await?;
        }
        Ok(Reader { tenant })
    }
}

/// Polls the live version's checkpoint of the position's partition until it covers the
/// offset or the configured wait runs out.
async fn wait_for(query: &Query, position: Position) -> Result<(), Problem> {
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
            return Err(not_yet(position, covered));
        }
        tokio::time::sleep(query.config().position_poll).await;
    }
}

fn not_yet(position: Position, covered: Option<i64>) -> Problem {
    let reached = match covered {
        Some(offset) => format!("has reached {}", Position { partition: position.partition, offset }),
        None => format!("has nothing of partition {} yet", position.partition),
    };
    let mut problem = Problem::new(
        StatusCode::GATEWAY_TIMEOUT,
        "not caught up",
        format!("the projection {reached}, not {position} yet; retry with the same {POSITION_HEADER}"),
    );
    problem.position = covered.map(|offset| Position { partition: position.partition, offset }.to_string());
    problem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_back_and_nonsense_is_refused() {
        let p = Position { partition: 3, offset: 1234 };
        assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        for bad in ["", "3", "3-", "-1", "a-1", "3-x", "-1-5", "3--5", "1024-0", "3-1-2", "99999999999-1"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
    }
}
