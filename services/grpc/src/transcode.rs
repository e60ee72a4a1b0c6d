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

/// The HTTP request `route` makes of `message`, with the metadata that stands for headers.
pub(crate) fn request(
    route: &Route,
    message: &DynamicMessage,
    metadata: &MetadataMap,
) -> Result<http::Request<axum::body::Body>, Status> {
    let mut uri = String::new();
    for segment in &route.path {
        match segment {
            Segment::Text(text) => uri.push_str(text),
            Segment::Field(field) => {
                let value = scalar_text(field, &message.get_field(field));
                if value.is_empty() {
                    return Err(Status::invalid_argument(format!("{}: required", field.name())));
                }
                uri.extend(utf8_percent_encode(&value, SEGMENT));
            }
        }
    }
    let rest = || message.fields().filter(|(f, _)| !route.in_path(f));
    let body = match &route.body {
        Body::None => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (field, value) in rest() {
                match value {
                    Value::Map(map) => {
                        for (key, value) in map {
                            query.append_pair(
                                &format!("{}.{}", field.name(), map_key(key)),
                                &scalar_text(&field, value),
                            );
                        }
                    }
                    _ => {
                        query.append_pair(field.name(), &scalar_text(&field, value));
                    }
                }
            }
            let query = query.finish();
            if !query.is_empty() {
                uri.push('?');
                uri.push_str(&query);
            }
            None
        }
        Body::Rest => {
            let mut out = String::new();
            write_object(&mut out, rest())?;
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
    for name in REQUEST_HEADERS {
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
    builder.body(body).map_err(|e| Status::invalid_argument(format!("not a request this API can make: {e}")))
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

/// Writes `fields` as one JSON object, by their proto names.
fn write_object<'a>(
    out: &mut String,
    fields: impl Iterator<Item = (FieldDescriptor, &'a Value)>,
) -> Result<(), Status> {
    out.push('{');
    for (i, (field, value)) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(field.name()).expect("text"));
        out.push(':');
        write_field(out, &field, value)?;
    }
    out.push('}');
    Ok(())
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
        Value::String(s) if is_json_text(field) => {
            // Checked here, so that a broken value is refused for its field's sake.
            let raw: &RawValue = serde_json::from_str(s).map_err(|_| {
                Status::invalid_argument(format!("{}: {s:?} is not a number (nor JSON)", field.name()))
            })?;
            raw.get().to_owned()
        }
        Value::Message(message) if is_well_known(&message.descriptor()) => serde_json::to_string(message)
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", field.name())))?,
        Value::Message(message) => {
            let mut inner = String::new();
            write_object(&mut inner, message.fields())?;
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
