//! What the OpenAPI documents declare of the server's own checks, in one place for both HTTP
//! services, so that a request valid by a document is one the server does not refuse as
//! malformed, and a request invalid by it is one the server refuses (clients and SDKs are
//! generated from the documents, and schemathesis holds the server to them in `tests/dev.rs`).
//!
//! The derive macros describe shapes; the rules of Tally's ids, assets, positions and limits
//! live in `tally_core` and [`crate::position`], and are written here as JSON Schema 2020-12
//! (the dialect of OpenAPI 3.1): every parameter and request-body property is matched by its
//! name. Two kinds of check are declared: what the server refuses as malformed (400: ids,
//! assets, the ranges of numbers) and the ledger's rules that need no state (422 with a reason:
//! positive amounts, counts and sizes, pending timeouts). A batch judges each transaction by the
//! rules on its own and answers each in its results, so its items declare only the first kind.
//! What JSON Schema cannot say is left to the descriptions: sizes in bytes (a schema's
//! `maxLength` counts characters, so metadata of many-byte characters may be refused below the
//! declared length), opaque tokens (a cursor or a position is valid only as the API gave it),
//! and rules that depend on the ledger's state (409 or 422 with a reason).

use serde_json::{Value, json};
use tally_core::limits::*;
use tally_core::{ASSET_CODE_LEN_MAX, ASSET_SCALE_MAX, COMMAND_ID_LEN_MAX, ID_LEN_MAX, STATE_STREAM_PREFIX};

/// The characters of every id (`tally_core::ids`): ASCII letters and digits, `- _ . : @`.
const ID_CHARS: &str = "[A-Za-z0-9._:@-]";

/// 2^127, exactly a double: `exclusiveMaximum` of it is `i128::MAX` and `minimum` of its
/// negation `i128::MIN`, the range of Tally's amounts. serde_json holds numbers beyond `u64` as
/// doubles, which it writes as `1.7014118346046923e38`; [`text`] writes the exact integer
/// instead, so that a reader of the document does not have to know that this double is exact.
const I128_BOUND: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

/// The document as it is served: JSON text, with the bound of amounts written as the integer it
/// is ([`I128_BOUND`]).
pub fn text(doc: &Value) -> String {
    let as_double = serde_json::to_string(&I128_BOUND).expect("a double serialises");
    let exact = (1u128 << 127).to_string();
    serde_json::to_string(doc).expect("a document serialises").replace(&as_double, &exact)
}

/// [`text`] as an `application/json` answer.
pub fn response(doc: &Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], text(doc)).into_response()
}

/// Limits a deployment configures, which the document declares too.
#[derive(Debug, Clone, Copy, Default)]
pub struct Configured {
    /// Most transactions in one batch request (the front door's `HttpConfig::batch_max`);
    /// `None` where the API has no batch route.
    pub batch_max: Option<usize>,
}

/// An id of up to `len_max` bytes (`tally_core::ids`).
fn id(len_max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": len_max, "pattern": format!("^{ID_CHARS}+$")})
}

/// A ledger id: an id other than the name document streams are under.
fn ledger() -> Value {
    let mut schema = id(ID_LEN_MAX);
    schema["not"] = json!({"const": STATE_STREAM_PREFIX});
    schema
}

/// A stream: a ledger id, or `state/TYPE/KEY` (`tally_core::StreamId::parse`).
fn stream() -> Value {
    let part = format!("{ID_CHARS}{{1,{ID_LEN_MAX}}}");
    json!({
        "type": "string",
        "pattern": format!("^(?:{part}|{STATE_STREAM_PREFIX}/{part}/{part})$"),
        "not": {"const": STATE_STREAM_PREFIX},
    })
}

/// `CODE/DECIMALS` (`tally_core::Asset::parse`): the decimals are read as a `u8`, which also
/// takes a leading `+` and leading zeros.
fn asset() -> Value {
    let code = format!("[A-Z][A-Z0-9_-]{{0,{}}}", ASSET_CODE_LEN_MAX - 1);
    let scale = match ASSET_SCALE_MAX {
        18 => "(?:[0-9]|1[0-8])",
        other => unreachable!("the asset pattern is written for 18 decimals at most, not {other}"),
    };
    json!({"type": "string", "pattern": format!("^{code}/\\+?0*{scale}$")})
}

/// A `Tally-Position` token as [`crate::position`] writes it: `<partition>-<offset>.<tag>`.
/// Only the writer's tenant's tag is accepted, which no schema can say.
fn position() -> Value {
    // Leading zeros are read past, as Rust's integer parsing does.
    let partition = "0*(?:[0-9]|[1-9][0-9]|[1-9][0-9][0-9]|10[01][0-9]|102[0-3])";
    json!({"type": "string", "pattern": format!("^{partition}-0*[0-9]{{1,18}}\\.[0-9a-f]{{16}}$")})
}

/// An amount in minor units as the front door reads it: a JSON integer in `i128`'s range.
fn amount() -> Value {
    json!({"type": "integer", "minimum": -I128_BOUND, "exclusiveMaximum": I128_BOUND})
}

/// A whole number of `u64`.
fn unsigned() -> Value {
    json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
}

/// The schema of a parameter (path, query or header) named `name`, where the server checks it.
fn parameter(name: &str) -> Option<Value> {
    Some(match name {
        "ledger" => ledger(),
        "account" | "tx_id" | "doc_type" | "key" | "prefix" => id(ID_LEN_MAX),
        "command_id" => id(COMMAND_ID_LEN_MAX),
        // A client's command id may not look like a transaction's default one (`tx:<tx_id>`).
        "idempotency-key" => {
            let mut schema = id(COMMAND_ID_LEN_MAX);
            schema["not"] = json!({"pattern": format!("^{}", tally_core::DEFAULT_TX_COMMAND_PREFIX)});
            schema
        }
        "stream" => stream(),
        "asset" => asset(),
        crate::POSITION_HEADER => position(),
        "fingerprint" => json!({"type": "string", "pattern": "^[0-9A-Fa-f]{32}$"}),
        // The front door's conditions on documents (the query API documents neither header):
        // a version read as a `u64` up to an Avro long, in quotes or weak or bare; or `*`.
        "if-match" => json!({"type": "string", "pattern": "^(?:W/)*\"*\\+?0*[0-9]{1,18}\"*$"}),
        "if-none-match" => json!({"type": "string", "enum": ["*"]}),
        "at" | "from" | "to" => json!({"type": "string", "format": "date-time"}),
        "limit" => json!({"type": "integer", "minimum": 1, "maximum": usize::MAX}),
        // Opaque: only a `next_cursor`, `resume_cursor` or live resume token the API gave is
        // valid (base64url). A live stream's `Last-Event-ID` is such a token, or (following one
        // stream) a stream version.
        "cursor" | "resume" | "last-event-id" => {
            json!({"type": "string", "minLength": 1, "maxLength": 32 * 1024, "pattern": "^[A-Za-z0-9_-]+$"})
        }
        "after" => unsigned(),
        "type" => event_kinds(),
        _ => return None,
    })
}

/// Event kinds, comma-separated, each one of [`tally_core::EVENT_KINDS`], spaces or tabs
/// around them, empty items allowed (`type=` is no filter).
fn event_kinds() -> Value {
    let kind = format!("(?:{})[ \\t]*", tally_core::EVENT_KINDS.join("|"));
    json!({"type": "string", "pattern": format!("^[ \\t]*(?:{kind})?(?:,[ \\t]*(?:{kind})?)*$")})
}

/// What the front door refuses as malformed (400) in a request body's property `name`.
fn parsed(name: &str, configured: Configured) -> Option<Value> {
    Some(match name {
        "account" | "source" | "destination" | "tx_id" => id(ID_LEN_MAX),
        "asset" => asset(),
        "amount" | "min_balance" => amount(),
        "amounts" => json!({"type": "array", "items": amount()}),
        "pending_timeout_ms" => json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}),
        "transactions" => json!({"minItems": 1, "maxItems": configured.batch_max?}),
        _ => return None,
    })
}

/// What the ledger's rules refuse (422 with a reason) in a request body's property `name`
/// whatever the ledger holds (`tally_core::rules`, bounds from `tally_core::limits`).
fn ruled(name: &str) -> Option<Value> {
    Some(match name {
        "amount" => json!({"minimum": 1}),
        "postings" => json!({"minItems": 1, "maxItems": POSTINGS_MAX}),
        "limits" => json!({"maxItems": ACCOUNT_LIMITS_MAX}),
        "pending_timeout_ms" => json!({"minimum": 1, "maximum": PENDING_TIMEOUT_MS_MAX}),
        // In bytes for the server, in characters for a schema (see above).
        "metadata" => json!({
            "maxProperties": METADATA_ENTRIES_MAX,
            "propertyNames": {"type": "string", "maxLength": METADATA_KEY_LEN_MAX},
            "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_LEN_MAX},
        }),
        _ => return None,
    })
}

/// The request schema whose items a batch judges one by one, and the prefix of their copies.
const BATCH: (&str, &str, &str) = ("BatchBody", "transactions", "Batch");

/// Declares the server's checks on `doc` (an OpenAPI 3.1 document as JSON): the schema of
/// every parameter and request-body property it knows by name (merged over what the derive
/// wrote, keeping descriptions), and no `null` for a parameter (a query or a header is text or
/// absent, never null).
pub fn declare_checks(doc: &mut Value, configured: Configured) {
    for item in doc["paths"].as_object_mut().into_iter().flat_map(|paths| paths.values_mut()) {
        for operation in item.as_object_mut().into_iter().flat_map(|item| item.values_mut()) {
            for parameter_doc in operation["parameters"].as_array_mut().into_iter().flatten() {
                let name = parameter_doc["name"].as_str().unwrap_or_default().to_owned();
                drop_null(&mut parameter_doc["schema"]);
                if let Some(declared) = parameter(&name) {
                    parameter_doc["schema"] = declared;
                }
            }
        }
    }
    let requests = request_schemas(doc);
    declare_on_properties(doc, &requests, |name| parsed(name, configured));
    copy_batch_items(doc);
    declare_on_properties(doc, &requests, ruled);
}

/// Declares `declared(property)` on the properties of the schemas named `names`.
fn declare_on_properties(doc: &mut Value, names: &[String], declared: impl Fn(&str) -> Option<Value>) {
    for name in names {
        let properties = &mut doc["components"]["schemas"][name]["properties"];
        for (property_name, schema) in properties.as_object_mut().into_iter().flatten() {
            if let Some(declared) = declared(property_name) {
                merge_keeping_null(schema, declared);
            }
        }
    }
}

/// Gives a batch its own copies of its items' schemas (`TransactionBody` becomes
/// `BatchTransactionBody`, and so on for what it uses), so the rules declared later on the
/// single routes' schemas are not declared on the batch: it answers a transaction that breaks
/// them inside a 200, as that transaction's result.
fn copy_batch_items(doc: &mut Value) {
    let (batch, field, prefix) = BATCH;
    if doc["components"]["schemas"].get(batch).is_none() {
        return;
    }
    let items = &doc["components"]["schemas"][batch]["properties"][field]["items"];
    let mut refs = Vec::new();
    collect_refs(items, &mut refs);
    let mut copied: Vec<String> = Vec::new();
    while let Some(name) = refs.pop() {
        if !copied.contains(&name) {
            collect_refs(&doc["components"]["schemas"][&name], &mut refs);
            copied.push(name);
        }
    }
    let rename = |value: &mut Value| rewrite_refs(value, &copied, prefix);
    for name in &copied {
        let mut copy = doc["components"]["schemas"][name].clone();
        rename(&mut copy);
        let judged = "In a batch each one is judged by the ledger's rules on its own: one that breaks \
            them (a positive amount, counts and sizes, a pending timeout of 1 ms to 30 days, as the \
            single route's schema declares) gets its 422 in the results, and the others go on.";
        let description = copy["description"].as_str().unwrap_or_default().to_owned();
        copy["description"] = json!(format!("{description}\n\n{judged}").trim().to_owned());
        doc["components"]["schemas"][format!("{prefix}{name}")] = copy;
    }
    rename(&mut doc["components"]["schemas"][batch]["properties"][field]["items"]);
}

/// Points every `$ref` in `value` to one of `names` at its copy named `prefix` + name.
fn rewrite_refs(value: &mut Value, names: &[String], prefix: &str) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref") {
                let name = target.strip_prefix("#/components/schemas/").unwrap_or_default();
                if names.iter().any(|n| n == name) {
                    *target = format!("#/components/schemas/{prefix}{name}");
                }
            }
            map.values_mut().for_each(|v| rewrite_refs(v, names, prefix));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, names, prefix)),
        _ => {}
    }
}

/// The names of the component schemas that request bodies use, directly or through others.
fn request_schemas(doc: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut refs = Vec::new();
    for item in doc["paths"].as_object().into_iter().flat_map(|paths| paths.values()) {
        for operation in item.as_object().into_iter().flat_map(|item| item.values()) {
            collect_refs(&operation["requestBody"], &mut refs);
        }
    }
    while let Some(name) = refs.pop() {
        if !names.contains(&name) {
            collect_refs(&doc["components"]["schemas"][&name], &mut refs);
            names.push(name);
        }
    }
    names
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                refs.extend(target.strip_prefix("#/components/schemas/").map(str::to_owned));
            }
            map.values().for_each(|v| collect_refs(v, refs));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

/// `type: [T, "null"]` becomes `type: T`.
fn drop_null(schema: &mut Value) {
    if let Some(types) = schema["type"].as_array() {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        schema["type"] = match kept.len() {
            1 => kept[0].clone(),
            _ => Value::Array(kept),
        };
    }
}

/// Sets every key of `declared` on `schema` (a declared type also drops the derive's
/// `format`, such as `int64` for a `u64`), but a property the derive made nullable (`Option`:
/// absent or `null`) stays so.
fn merge_keeping_null(schema: &mut Value, declared: Value) {
    let nullable = schema["type"].as_array().is_some_and(|types| types.iter().any(|t| t == "null"));
    let declared_type = declared.get("type").cloned();
    if let (Some(schema), Value::Object(declared)) = (schema.as_object_mut(), declared) {
        if declared_type.is_some() {
            schema.remove("format");
        }
        schema.extend(declared);
    }
    if let (true, Some(Value::String(declared_type))) = (nullable, declared_type) {
        schema["type"] = json!([declared_type, "null"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each declared pattern is a valid regular expression that takes what the server takes
    /// and refuses what it refuses, on the edges.
    #[test]
    fn declared_patterns_agree_with_the_parsers() {
        let matches = |schema: &Value, text: &str| {
            let pattern = schema["pattern"].as_str().unwrap();
            let re = regex_lite::Regex::new(pattern).unwrap();
            let length_ok = schema["maxLength"].as_u64().is_none_or(|max| text.len() as u64 <= max)
                && schema["minLength"].as_u64().is_none_or(|min| text.len() as u64 >= min);
            let not = schema["not"]["const"].as_str().is_some_and(|c| c == text)
                || schema["not"]["pattern"]
                    .as_str()
                    .is_some_and(|p| regex_lite::Regex::new(p).unwrap().is_match(text));
            re.is_match(text) && length_ok && !not
        };
        let long = "x".repeat(ID_LEN_MAX);
        for text in
            ["a", "users:42.wallet@eu-1_x", "", "a/b", "a b", "é", &long, &format!("{long}x"), "state"]
        {
            let parsed = tally_core::AccountId::parse(text).is_ok();
            assert_eq!(matches(&id(ID_LEN_MAX), text), parsed, "account {text:?}");
            let parsed = tally_core::LedgerId::parse_ledger(text).is_ok();
            assert_eq!(matches(&ledger(), text), parsed, "ledger {text:?}");
        }
        for text in
            ["main", "state", "state/a/b", "state/a", "state/a/b/c", "a/b", "", "state/", "x/state/a/b"]
        {
            let parsed = tally_core::StreamId::parse(text).is_ok();
            assert_eq!(matches(&stream(), text), parsed, "stream {text:?}");
        }
        let mut assets: Vec<String> =
            ["USD/2", "USD/18", "USD/19", "USD/+2", "USD/02", "usd/2", "U/0", "USD"]
                .into_iter()
                .chain(["USD/", "USD/-1", "1SD/2", "U-1_X/0", "USD/256"])
                .map(str::to_owned)
                .collect();
        assets.extend([32, 33].map(|len| format!("{}/2", "A".repeat(len))));
        for text in &assets {
            let parsed = tally_core::Asset::parse(text).is_ok();
            assert_eq!(matches(&asset(), text), parsed, "asset {text:?}");
        }
        let acme = tally_core::TenantId::parse("acme").unwrap();
        for (partition, offset) in [(0, 0), (9, 10), (1023, 999_999_999_999_999_999), (100, 5)] {
            let token = crate::position::Position { partition, offset }.token(&acme);
            assert!(matches(&position(), &token), "{token}");
        }
        for token in ["1024-0.0123456789abcdef", "0-0", "-1-0.0123456789abcdef", "0-0.0123456789ABCDEF"] {
            assert!(!matches(&position(), token), "{token}");
        }
        let key = |text: &str| {
            let schema = parameter("idempotency-key").unwrap();
            matches(&schema, text)
        };
        assert!(key("order-1") && !key("tx:order-1") && !key(""));
    }

    #[test]
    fn the_bound_of_amounts_is_served_as_the_exact_integer() {
        assert_eq!(I128_BOUND as u128, 1u128 << 127);
        assert_eq!(-I128_BOUND as i128, i128::MIN);
        let served = text(&json!({"b": [I128_BOUND, 1.5]}));
        assert_eq!(served, r#"{"b":[170141183460469231731687303715884105728,1.5]}"#);
        let served = text(&amount());
        assert!(served.contains(r#""minimum":-170141183460469231731687303715884105728"#), "{served}");
        assert!(served.contains(r#""exclusiveMaximum":170141183460469231731687303715884105728"#), "{served}");
    }
}
