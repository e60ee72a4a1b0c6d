//! Between messages and the HTTP API's requests and JSON answers.
//!
//! Amounts are integers of up to 39 digits and JSON numbers past 2^53 do not survive a double,
//! so JSON is read and written as text here: a `tally.v1.json` field takes a value's text as
//! it is, both ways, and nothing passes through a floating-point number.

use crate::routes::{Body, Route, Segment, is_json_text};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// Metadata passed on to the route as the HTTP headers of the same names.
pub(crate) const REQUEST_HEADERS: [&str; 8] = [
    "authorization",
    "idempotency-key",
    "if-match",
    "if-none-match",
    "tally-position",
    "last-event-id",
    "traceparent",
    "tracestate",
];

/// Headers of the answer given back as metadata.
pub(crate) const ANSWER_HEADERS: [&str; 4] = ["tally-position", "etag", "location", "retry-after"];

/// What a path segment may hold unescaped: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// An HTTP request made of a message.
pub(crate) struct HttpRequest {
    pub request: http::Request<axum::body::Body>,
    /// The first path field left empty: the route is not found, once the gate has let the
    /// caller through (so that a caller learns nothing before it is authenticated).
    pub missing: Option<String>,
}

/// The HTTP request `route` makes of `message`, with the metadata that stands for headers.
/// Nothing the route judges is refused here: those refusals are the route's, behind the gate.
/// Fails only for what no HTTP request can carry (a metadata value, a NaN).
pub(crate) fn request(
    route: &Route,
    message: &DynamicMessage,
    metadata: &MetadataMap,
) -> Result<HttpRequest, Status> {
    let (mut uri, missing) = path(route, message);
    let body = match &route.body {
        Body::None => {
            let query = query(route, message);
            if !query.is_empty() {
                uri.push('?');
                uri.push_str(&query);
            }
            None
        }
        Body::Rest => {
            let mut out = String::new();
            write_object(&mut out, &route.input(), &|f| !route.in_path(f), message)?;
            Some(out)
        }
        Body::Field(field) => {
            let mut out = String::new();
            match message.has_field(field) {
                true => write_field(&mut out, field, &message.get_field(field))?,
                false => out.push_str("null"),
            }
            Some(out)
        }
    };
    let mut builder = http::Request::builder().method(route.http_method.clone()).uri(uri);
    let read = route.http_method == http::Method::GET;
    for name in REQUEST_HEADERS {
        // A read answers in full: a 304 has no message to give (conditions are for writes).
        if read && name == "if-none-match" {
            continue;
        }
        for value in metadata.get_all(name) {
            builder = builder.header(name, value.as_bytes());
        }
    }
    let body = match body {
        Some(json) => {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
            axum::body::Body::from(json)
        }
        None => axum::body::Body::empty(),
    };
    let request = builder
        .body(body)
        .map_err(|e| Status::invalid_argument(format!("not a request this API can make: {e}")))?;
    Ok(HttpRequest { request, missing })
}

/// The route's path with `message`'s fields in it (percent-encoded), and the first of those
/// left empty.
fn path(route: &Route, message: &DynamicMessage) -> (String, Option<String>) {
    let (mut uri, mut missing) = (String::new(), None);
    for segment in &route.path {
        match segment {
            Segment::Text(text) => uri.push_str(text),
            Segment::Field(field) => {
                let value = scalar_text(field, &message.get_field(field));
                if value.is_empty() && missing.is_none() {
                    missing = Some(field.name().to_owned());
                }
                uri.extend(utf8_percent_encode(&value, SEGMENT));
            }
        }
    }
    (uri, missing)
}

/// The set fields of `message` not in the route's path, as a query string (a map field `f`
/// as `f.KEY=VALUE` pairs).
fn query(route: &Route, message: &DynamicMessage) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (field, value) in message.fields().filter(|(f, _)| !route.in_path(f)) {
        match value {
            Value::Map(map) => {
                for (key, value) in map {
                    let name = format!("{}.{}", field.name(), map_key(key));
                    query.append_pair(&name, &scalar_text(&field, value));
                }
            }
            _ => {
                query.append_pair(field.name(), &scalar_text(&field, value));
            }
        }
    }
    query.finish()
}

/// A scalar field's value as path or query text.
fn scalar_text(field: &FieldDescriptor, value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::I32(n) => n.to_string(),
        Value::I64(n) => n.to_string(),
        Value::U32(n) => n.to_string(),
        Value::U64(n) => n.to_string(),
        Value::F32(n) => n.to_string(),
        Value::F64(n) => n.to_string(),
        Value::EnumNumber(n) => enum_name(field, *n),
        Value::Bytes(_) | Value::Message(_) | Value::List(_) | Value::Map(_) => String::new(),
    }
}

fn map_key(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

fn enum_name(field: &FieldDescriptor, number: i32) -> String {
    match field.kind() {
        Kind::Enum(e) => e.get_value(number).map_or_else(|| number.to_string(), |v| v.name().to_owned()),
        _ => number.to_string(),
    }
}

/// Writes the fields of `message` (of type `descriptor`) that `wanted` takes as one JSON object,
/// by their proto names: those set, and every list (an empty list is sent as one, so that the
/// route judges it as it judges `[]` over HTTP).
fn write_object(
    out: &mut String,
    descriptor: &MessageDescriptor,
    wanted: &dyn Fn(&FieldDescriptor) -> bool,
    message: &DynamicMessage,
) -> Result<(), Status> {
    out.push('{');
    let mut first = true;
    for field in descriptor.fields().filter(|f| wanted(f)) {
        if !(message.has_field(&field) || field.is_list()) {
            continue;
        }
        if !std::mem::take(&mut first) {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(field.name()).expect("text"));
        out.push(':');
        write_field(out, &field, &message.get_field(&field))?;
    }
    out.push('}');
    Ok(())
}

/// Writes a `google.protobuf.Struct`, `Value` or `ListValue` as JSON, a whole number as an
/// integer (`1`, not `1.0`: the same document text, so the same command fingerprint, as the
/// HTTP API makes of `{"v":1}`).
fn write_well_known(out: &mut String, message: &DynamicMessage) -> Result<(), Status> {
    let field = |name: &str| message.get_field_by_name(name);
    match message.descriptor().name() {
        "Struct" => {
            out.push('{');
            if let Some(fields) = field("fields")
                && let Value::Map(fields) = fields.as_ref()
            {
                // In key order: a map's own order changes from call to call, and the text is
                // what the command's fingerprint covers (a retry must be the same command).
                let mut sorted: Vec<(String, &Value)> = fields.iter().map(|(k, v)| (map_key(k), v)).collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                for (i, (key, value)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(&key).expect("text"));
                    out.push(':');
                    write_nested(out, value)?;
                }
            }
            out.push('}');
        }
        "ListValue" => {
            out.push('[');
            if let Some(values) = field("values")
                && let Value::List(values) = values.as_ref()
            {
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_nested(out, value)?;
                }
            }
            out.push(']');
        }
        "Value" => match message.fields().next() {
            None => out.push_str("null"),
            // JSON has no NaN nor infinities: refused, not written as null.
            Some((_, Value::F64(n))) if !n.is_finite() => {
                return Err(Status::invalid_argument(format!("a document number is finite, not {n}")));
            }
            // A whole number as the integer it is (exact: a whole double is an integer), as
            // the same document's text over HTTP would have it.
            Some((_, Value::F64(n))) if n.fract() == 0.0 && n.abs() < 1e38 => {
                out.push_str(&(*n as i128).to_string())
            }
            Some((_, Value::F64(n))) => out.push_str(
                &serde_json::to_string(n).map_err(|e| Status::invalid_argument(format!("a number: {e}")))?,
            ),
            Some((_, Value::String(s))) => out.push_str(&serde_json::to_string(s).expect("text")),
            Some((_, Value::Bool(b))) => out.push_str(&b.to_string()),
            Some((_, Value::Message(inner))) => write_well_known(out, inner)?,
            Some(_) => out.push_str("null"),
        },
        other => {
            return Err(Status::invalid_argument(format!("google.protobuf.{other} has no place here")));
        }
    }
    Ok(())
}

fn write_nested(out: &mut String, value: &Value) -> Result<(), Status> {
    match value {
        Value::Message(message) => write_well_known(out, message),
        _ => Err(Status::invalid_argument("a Struct holds Values")),
    }
}

/// Writes `value` of `field` as JSON (a list or map whole).
fn write_field(out: &mut String, field: &FieldDescriptor, value: &Value) -> Result<(), Status> {
    match value {
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_one(out, field, item)?;
            }
            out.push(']');
        }
        Value::Map(map) => {
            let value_field = field.kind().as_message().map(|entry| entry.map_entry_value_field());
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(&map_key(key)).expect("text"));
                out.push(':');
                write_one(out, value_field.as_ref().unwrap_or(field), item)?;
            }
            out.push('}');
        }
        one => write_one(out, field, one)?,
    }
    Ok(())
}

/// Writes one value (not a list nor a map) of `field` as JSON.
fn write_one(out: &mut String, field: &FieldDescriptor, value: &Value) -> Result<(), Status> {
    let text = match value {
        // Text that is not JSON goes as a JSON string: the route refuses it (after the gate).
        Value::String(s) if is_json_text(field) => match serde_json::from_str::<&RawValue>(s) {
            Ok(raw) => raw.get().to_owned(),
            Err(_) => serde_json::to_string(s).expect("text"),
        },
        Value::Message(message) if is_well_known(&message.descriptor()) => {
            let mut inner = String::new();
            write_well_known(&mut inner, message)?;
            inner
        }
        Value::Message(message) => {
            let mut inner = String::new();
            write_object(&mut inner, &message.descriptor(), &|_| true, message)?;
            inner
        }
        Value::String(s) => serde_json::to_string(s).expect("text"),
        Value::EnumNumber(n) => serde_json::to_string(&enum_name(field, *n)).expect("text"),
        Value::F32(n) => serde_json::to_string(n).map_err(|e| Status::invalid_argument(e.to_string()))?,
        Value::F64(n) => serde_json::to_string(n).map_err(|e| Status::invalid_argument(e.to_string()))?,
        Value::Bytes(_) | Value::List(_) | Value::Map(_) => {
            return Err(Status::internal(format!("{}: no JSON form", field.name())));
        }
        scalar => scalar_text(field, scalar),
    };
    out.push_str(&text);
    Ok(())
}

fn is_well_known(message: &MessageDescriptor) -> bool {
    message.package_name() == "google.protobuf"
}

/// The message of type `descriptor` a JSON answer stands for. A field of the answer that the
/// message has no place for is an error: the API's proto files are behind its routes.
pub(crate) fn message(descriptor: &MessageDescriptor, json: &[u8]) -> Result<DynamicMessage, Status> {
    let raw: &RawValue =
        serde_json::from_slice(json).map_err(|e| Status::internal(format!("the answer is not JSON: {e}")))?;
    let value = shaped(descriptor, raw).map_err(|e| Status::internal(format!("the answer: {e}")))?;
    let options = prost_reflect::DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(descriptor.clone(), value, &options)
        .map_err(|e| Status::internal(format!("the answer as {}: {e}", descriptor.full_name())))
}

/// The JSON value of a message, with the text of its `tally.v1.json` fields made strings.
fn shaped(descriptor: &MessageDescriptor, raw: &RawValue) -> Result<serde_json::Value, String> {
    if is_well_known(descriptor) {
        return serde_json::from_str(raw.get()).map_err(|e| e.to_string());
    }
    let object: BTreeMap<String, &RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| format!("{}: {e}", descriptor.name()))?;
    let mut shaped = serde_json::Map::new();
    for (name, raw) in object {
        let field = descriptor
            .get_field_by_name(&name)
            .ok_or_else(|| format!("{} has no field {name}", descriptor.full_name()))?;
        if raw.get() == "null" {
            continue;
        }
        let value = if field.is_list() {
            let items: Vec<&RawValue> =
                serde_json::from_str(raw.get()).map_err(|e| format!("{name}: {e}"))?;
            let items: Result<Vec<_>, String> = items.into_iter().map(|item| one(&field, item)).collect();
            serde_json::Value::Array(items?)
        } else if field.is_map() {
            serde_json::from_str(raw.get()).map_err(|e| format!("{name}: {e}"))?
        } else {
            one(&field, raw)?
        };
        shaped.insert(name, value);
    }
    Ok(serde_json::Value::Object(shaped))
}

fn one(field: &FieldDescriptor, raw: &RawValue) -> Result<serde_json::Value, String> {
    if is_json_text(field) {
        return Ok(serde_json::Value::String(raw.get().to_owned()));
    }
    match field.kind() {
        Kind::Message(message) => shaped(&message, raw),
        _ => serde_json::from_str(raw.get()).map_err(|e| format!("{}: {e}", field.name())),
    }
}

/// The answer's headers that are given back as metadata.
pub(crate) fn answer_metadata(headers: &http::HeaderMap) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    for name in ANSWER_HEADERS {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok())
            && let Ok(value) = value.parse()
        {
            metadata.insert(name, value);
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{POOL, routes_of};

    fn body_of(route: &str, service: &str, json: serde_json::Value) -> (String, String) {
        let routes = routes_of(service);
        let route = &routes[route];
        let message = DynamicMessage::deserialize(route.input(), json).unwrap();
        let made = request(route, &message, &MetadataMap::new()).unwrap();
        let uri = made.request.uri().to_string();
        let bytes = futures::executor::block_on(axum::body::to_bytes(made.request.into_body(), usize::MAX));
        (uri, String::from_utf8(bytes.unwrap().to_vec()).unwrap())
    }

    #[test]
    fn amounts_cross_as_exact_text_both_ways() {
        let min = "-170141183460469231731687303715884105728";
        let posting =
            serde_json::json!({"source": "world", "destination": "a", "asset": "USD/2", "amount": min});
        let (uri, body) = body_of(
            "/tally.v1.Commands/PostTransaction",
            "tally.v1.Commands",
            serde_json::json!({"ledger": "main", "tx_id": "t/1", "postings": [posting]}),
        );
        assert_eq!(uri, "/v1/ledgers/main/transactions");
        assert!(body.contains(&format!("\"amount\":{min}")), "{body}");
        assert!(body.contains("\"tx_id\":\"t/1\""), "{body}");
        // Not JSON: sent as a string, for the route to refuse.
        let posting =
            serde_json::json!({"source": "w", "destination": "a", "asset": "USD/2", "amount": "1,\"x\":2"});
        let (_, body) = body_of(
            "/tally.v1.Commands/PostTransaction",
            "tally.v1.Commands",
            serde_json::json!({"ledger": "main", "tx_id": "t", "postings": [posting]}),
        );
        assert!(body.contains(r#""amount":"1,\"x\":2""#), "{body}");

        let line = POOL.get_message_by_name("tally.v1.StatementLine").unwrap();
        let max = "170141183460469231731687303715884105727";
        let answer = format!(
            r#"{{"asset":"USD/2","amount":{max},"balance_after":-1,"tx_id":"t","counterparty":"w","time":"x","event_id":"e"}}"#
        );
        let read = message(&line, answer.as_bytes()).unwrap();
        assert_eq!(read.get_field_by_name("amount").unwrap().as_str(), Some(max));
        assert_eq!(read.get_field_by_name("balance_after").unwrap().as_str(), Some("-1"));
        // The proto files must keep up with the routes: an unknown field is an error.
        assert!(message(&line, br#"{"asset":"USD/2","nope":1}"#).is_err());
    }

    #[test]
    fn a_document_is_written_with_keys_in_order_and_whole_numbers_as_integers() {
        let value = serde_json::json!({"z": 1, "a": [2.5, null, true, -3], "m": {"k": "v"}});
        let (uri, body) = body_of(
            "/tally.v1.Commands/PutDocument",
            "tally.v1.Commands",
            serde_json::json!({"doc_type": "order", "key": "a b/ü", "value": value}),
        );
        assert_eq!(uri, "/v1/state/order/a%20b%2F%C3%BC");
        assert_eq!(body, r#"{"a":[2.5,null,true,-3],"m":{"k":"v"},"z":1}"#);
    }

    #[test]
    fn reads_put_their_fields_in_the_query_and_maps_as_name_dot_key() {
        let (uri, body) = body_of(
            "/tally.v1.Queries/ListDocuments",
            "tally.v1.Queries",
            serde_json::json!({"doc_type": "order", "limit": 5, "field": {"a&b": "c=d"}}),
        );
        assert_eq!(uri, "/v1/state/order?limit=5&field.a%26b=c%3Dd");
        assert!(body.is_empty());
    }
}
