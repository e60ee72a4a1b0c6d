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

/// A read, as the gate admitted it: who asked what, with which credential.
pub(crate) struct Read {
    pub who: Arc<Principal>,
    /// The bearer token, to check again for each event of a live stream.
    pub token: Option<String>,
    pub method: String,
    /// Percent-decoded, as the policy saw it.
    pub path: String,
    pub query: String,
    /// Sent as HEAD (and, while the policy judges answers, run as a GET: see the gate).
    pub head: bool,
}

impl Read {
    fn access(&self) -> Access<'_> {
        Access { action: Action::Read, method: &self.method, path: &self.path, query: &self.query }
    }

    fn judge(&self, auth: &Authenticator, answer: &str) -> ResponseVerdict {
        auth.judge_response(&self.who, self.access(), answer)
    }

    /// Whether the credential still passes as the same tenant's, for this read.
    fn still_admitted(&self, auth: &Authenticator) -> bool {
        match auth.authenticate(self.token.as_deref()) {
            Ok(who) => who.tenant == self.who.tenant && auth.authorize(&who, self.access()).is_ok(),
            Err(_) => false,
        }
    }
}

/// `response` as the policy lets `read` have it. A live stream is judged event by event with
/// the policy of the moment, and its credential is checked again for each event: a key revoked
/// (or a policy changed) while a stream is open applies to the next event.
pub(crate) async fn judged(auth: Authenticator, read: Read, response: Response) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    match content_type.unwrap_or_default() {
        t if t.starts_with("text/event-stream") => event_by_event(auth, read, response),
        t if t.starts_with("application/json") && auth.judges_responses() => {
            whole(auth, read, response).await
        }
        _ => response,
    }
}

async fn whole(auth: Authenticator, read: Read, response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, ANSWER_BYTES_MAX).await else {
        return unjudged("the answer is too large for the response policy to judge");
    };
    let head = read.head;
    // Judging a large answer takes milliseconds of CPU: off the request workers.
    let judging = tokio::task::spawn_blocking(move || {
        let text = std::str::from_utf8(&bytes).map_err(|e| e.to_string())?;
        match read.judge(&auth, text) {
            ResponseVerdict::Pass => Ok(Some(bytes)),
            ResponseVerdict::Deny => Ok(None),
            ResponseVerdict::Remove(paths) => {
                without(text, &paths).map(|kept| Some(Bytes::from(kept))).map_err(|e| e.to_string())
            }
        }
    });
    let kept = match judging.await {
        Ok(Ok(Some(kept))) => kept,
        Ok(Ok(None)) => return denied(),
        Ok(Err(e)) => return unjudged(&format!("the answer is not UTF-8 JSON ({e})")),
        Err(e) => return unjudged(&e.to_string()),
    };
    parts.headers.insert(header::CONTENT_LENGTH, kept.len().into());
    let body = if head { Body::empty() } else { Body::from(kept) };
    Response::from_parts(parts, body)
}

/// The live stream with its credential checked again and each event's `data` judged, for
/// each event: the stream ends when the credential no longer passes; an event is left out when
/// denied, and has the fields removed that the policy names.
fn event_by_event(auth: Authenticator, read: Read, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let state = (body.into_data_stream(), String::new(), auth, read);
    let events = futures::stream::unfold(state, |(mut body, mut buffer, auth, read)| async move {
        loop {
            // An SSE event ends with an empty line.
            if let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if !read.still_admitted(&auth) {
                    return None;
                }
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
/// included). All paths are read against the answer as it was sent: removing one does not
/// move what another names.
pub(crate) fn without(text: &str, paths: &[Vec<String>]) -> Result<String, serde_json::Error> {
    let value: Box<RawValue> = serde_json::from_str(text)?;
    let paths: Vec<&[String]> = paths.iter().map(Vec::as_slice).collect();
    Ok(remove(value, &paths)?.get().to_owned())
}

/// `value` without what `paths` name. A path's first name picks this value's children: an
/// object member by its name, an array element by its index (decimal), `*` every child, and
/// `**` any number of levels (none included).
fn remove(value: Box<RawValue>, paths: &[&[String]]) -> Result<Box<RawValue>, serde_json::Error> {
    let (mut here, mut deep) = (Vec::new(), Vec::new());
    for path in paths {
        split_deep(path, &mut here, &mut deep);
    }
    if here.is_empty() && deep.is_empty() {
        return Ok(value);
    }
    // The paths of the child called `name`; `None` when one of them ends at it (it goes).
    let child_paths = |name: &str| -> Option<Vec<&[String]>> {
        let mut inner = deep.clone();
        for path in &here {
            let (first, rest) = path.split_first().expect("split_deep keeps no empty path");
            if first == "*" || first == name {
                if rest.is_empty() {
                    return None;
                }
                inner.push(rest);
            }
        }
        Some(inner)
    };
    let kept = |name: &str, child: Box<RawValue>| match child_paths(name) {
        None => Ok(None),
        Some(inner) if inner.is_empty() => Ok(Some(child)),
        Some(inner) => remove(child, &inner).map(Some),
    };
    match value.get().trim_start().as_bytes().first() {
        Some(b'{') => {
            let Members(members) = serde_json::from_str(value.get())?;
            let mut out = Vec::with_capacity(members.len());
            for (name, child) in members {
                if let Some(child) = kept(&name, child)? {
                    out.push((name, child));
                }
            }
            serde_json::value::to_raw_value(&Members(out))
        }
        Some(b'[') => {
            let elements: Vec<Box<RawValue>> = serde_json::from_str(value.get())?;
            let mut out = Vec::with_capacity(elements.len());
            for (index, child) in elements.into_iter().enumerate() {
                out.extend(kept(&index.to_string(), child)?);
            }
            serde_json::value::to_raw_value(&out)
        }
        _ => Ok(value),
    }
}

/// Sorts `path` into the paths whose first name picks a child of this value (`here`) and the
/// `**` paths handed to every child as they are (`deep`); `** rest` is also `rest` here.
fn split_deep<'p>(path: &'p [String], here: &mut Vec<&'p [String]>, deep: &mut Vec<&'p [String]>) {
    match path.split_first() {
        // `**` with nothing after it names nothing more.
        Some((first, rest)) if first == "**" && rest.is_empty() => {}
        Some((first, rest)) if first == "**" => {
            deep.push(path);
            split_deep(rest, here, deep);
        }
        Some(_) => here.push(path),
        None => {}
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
        // A path that names nothing removes nothing.
        assert_eq!(without(&page, &paths(&[&["items", "7"], &["nothing", "*"]])).unwrap(), page);
        assert_eq!(without(r#"[1,2]"#, &paths(&[&["*"]])).unwrap(), "[]");
        assert!(without("not json", &paths(&[&["a"]])).is_err());
    }

    #[test]
    fn indices_name_elements_of_the_answer_as_sent_and_double_stars_any_depth() {
        // Removing element 0 does not move what index 2 names.
        assert_eq!(without("[10,11,12,13]", &paths(&[&["0"], &["2"]])).unwrap(), "[11,13]");
        let deep = r#"{"metadata":{"email":"a"},"event":{"body":{"TransactionFailed":{"request":{"Transfer":{"metadata":{"email":"b","n":1}}}}}},"items":[{"metadata":{"email":"c"}}]}"#;
        let kept = without(deep, &paths(&[&["**", "metadata", "email"]])).unwrap();
        assert_eq!(
            kept,
            r#"{"metadata":{},"event":{"body":{"TransactionFailed":{"request":{"Transfer":{"metadata":{"n":1}}}}}},"items":[{"metadata":{}}]}"#
        );
        // `**` alone or last names nothing more than what precedes it.
        assert_eq!(without(deep, &paths(&[&["**"], &["event", "**"]])).unwrap(), deep);
        assert_eq!(without(r#"{"a":{"b":{"a":1}}}"#, &paths(&[&["**", "a"]])).unwrap(), "{}");
    }
}
