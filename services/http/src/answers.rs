//! The policy's judgement of what a read answers (`data.tally.response`; the rule is described
//! in `tally_auth::policy`), applied by the gate to every successful answer to a read: a JSON
//! body as a whole, a live stream (Server-Sent Events) event by event. Problems are not judged:
//! they carry nothing of the caller's data.
//!
//! Fields are removed from the JSON text without reading its numbers: amounts are integers of
//! up to 39 digits, which a round trip through `serde_json::Value` would turn into doubles.

use crate::Problem;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::sync::Arc;
use tally_auth::policy::ResponseVerdict;
use tally_auth::{Access, Action, Authenticator, Principal};

/// Largest answer the policy judges whole (a page of 1,000 documents of up to 64 KiB each fits).
const ANSWER_BYTES_MAX: usize = 128 * 1024 * 1024;

/// A read whose answer the policy judges: who asked what.
pub(crate) struct Read {
    pub who: Arc<Principal>,
    pub method: String,
    pub path: String,
}

impl Read {
    fn judge(&self, auth: &Authenticator, answer: &str) -> ResponseVerdict {
        let access = Access { action: Action::Read, method: &self.method, path: &self.path };
        auth.judge_response(&self.who, access, answer)
    }
}

/// `response` as the policy lets `read` have it.
pub(crate) async fn judged(auth: Authenticator, read: Read, response: Response) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    match content_type.unwrap_or_default() {
        t if t.starts_with("application/json") => whole(&auth, &read, response).await,
        t if t.starts_with("text/event-stream") => event_by_event(auth, read, response),
        _ => response,
    }
}

async fn whole(auth: &Authenticator, read: &Read, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ANSWER_BYTES_MAX).await else {
        return unjudged("the answer is too large for the response policy to judge");
    };
    let Ok(text) = std::str::from_utf8(&bytes) else { return unjudged("the answer is not UTF-8") };
    match read.judge(auth, text) {
        ResponseVerdict::Pass => Response::from_parts(parts, Body::from(bytes)),
        ResponseVerdict::Deny => denied(),
        ResponseVerdict::Remove(paths) => match without(text, &paths) {
            Ok(kept) => {
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, Body::from(kept))
            }
            Err(e) => unjudged(&format!("the answer is not JSON ({e})")),
        },
    }
}

/// The live stream with each event's `data` judged: left out when denied, fields removed.
fn event_by_event(auth: Authenticator, read: Read, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let state = (body.into_data_stream(), String::new(), auth, read);
    let events = futures::stream::unfold(state, |(mut body, mut buffer, auth, read)| async move {
        loop {
            // An SSE event ends with an empty line.
            if let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                let Some(judged) = judged_event(&auth, &read, &event) else { continue };
                return Some((Ok::<Bytes, axum::Error>(Bytes::from(judged)), (body, buffer, auth, read)));
            }
            match body.next().await? {
                Ok(chunk) => buffer.push_str(&String::from_utf8_lossy(&chunk)),
                Err(e) => return Some((Err(e), (body, buffer, auth, read))),
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(events))
}

/// One SSE event as the policy lets it go (comments and keep-alives as they are); `None`: left
/// out.
fn judged_event(auth: &Authenticator, read: &Read, event: &str) -> Option<String> {
    let Some(data) = event.lines().find_map(|line| line.strip_prefix("data:")) else {
        return Some(event.to_owned());
    };
    let data = data.trim_start();
    match read.judge(auth, data) {
        ResponseVerdict::Pass => Some(event.to_owned()),
        ResponseVerdict::Deny => None,
        ResponseVerdict::Remove(paths) => {
            let kept = without(data, &paths).ok()?;
            Some(event.replacen(data, &kept, 1))
        }
    }
}

fn denied() -> Response {
    Problem::new(StatusCode::FORBIDDEN, "forbidden", "the response policy does not allow this answer")
        .into_response()
}

fn unjudged(why: &str) -> Response {
    tracing::error!("an answer could not be judged by the response policy: {why}");
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error", "the answer could not be served")
        .into_response()
}

/// The JSON `text` without the fields at `paths`, every other byte of it as it was (numbers
/// included).
pub(crate) fn without(text: &str, paths: &[Vec<String>]) -> Result<String, serde_json::Error> {
    let mut value: Box<RawValue> = serde_json::from_str(text)?;
    for path in paths {
        value = remove(value, path)?;
    }
    Ok(value.get().to_owned())
}

/// `value` without what `path` names: object members by name, `*` every member or element.
fn remove(value: Box<RawValue>, path: &[String]) -> Result<Box<RawValue>, serde_json::Error> {
    let Some((name, rest)) = path.split_first() else { return Ok(value) };
    let every = name == "*";
    match value.get().trim_start().as_bytes().first() {
        Some(b'{') => {
            let Members(members) = serde_json::from_str(value.get())?;
            let mut kept = Vec::with_capacity(members.len());
            for (member, inner) in members {
                match (every || &member == name, rest.is_empty()) {
                    (true, true) => {}
                    (true, false) => kept.push((member, remove(inner, rest)?)),
                    (false, _) => kept.push((member, inner)),
                }
            }
            serde_json::value::to_raw_value(&Members(kept))
        }
        Some(b'[') if every => {
            let elements: Vec<Box<RawValue>> = serde_json::from_str(value.get())?;
            let elements: Vec<Box<RawValue>> = match rest.is_empty() {
                true => Vec::new(),
                false => elements.into_iter().map(|e| remove(e, rest)).collect::<Result<_, _>>()?,
            };
            serde_json::value::to_raw_value(&elements)
        }
        _ => Ok(value),
    }
}

/// A JSON object's members in their order, each value as its text.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

impl Serialize for Members {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(paths: &[&[&str]]) -> Vec<Vec<String>> {
        paths.iter().map(|p| p.iter().map(|s| s.to_string()).collect()).collect()
    }

    #[test]
    fn named_fields_go_and_every_other_byte_stays() {
        let big = "170141183460469231731687303715884105727";
        let page = format!(
            r#"{{"items":[{{"id":"a","metadata":{{"email":"a@x","note":"n"}},"amount":{big}}},{{"id":"b","metadata":{{"note":"m"}}}}],"next_cursor":null}}"#
        );
        let kept = without(&page, &paths(&[&["items", "*", "metadata", "email"]])).unwrap();
        assert_eq!(
            kept,
            format!(
                r#"{{"items":[{{"id":"a","metadata":{{"note":"n"}},"amount":{big}}},{{"id":"b","metadata":{{"note":"m"}}}}],"next_cursor":null}}"#
            )
        );
        let kept = without(&page, &paths(&[&["items", "*", "metadata"], &["next_cursor"]])).unwrap();
        assert_eq!(kept, format!(r#"{{"items":[{{"id":"a","amount":{big}}},{{"id":"b"}}]}}"#));
        // Names do not index arrays, and a path that names nothing removes nothing.
        assert_eq!(without(&page, &paths(&[&["items", "0"], &["nothing", "*"]])).unwrap(), page);
        assert_eq!(without(r#"[1,2]"#, &paths(&[&["*"]])).unwrap(), "[]");
        assert!(without("not json", &paths(&[&["a"]])).is_err());
    }
}
