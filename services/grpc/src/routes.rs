//! The methods of the API and the HTTP route of each, read from the descriptor set's
//! `tally.v1.http` options; which fields carry JSON text (`tally.v1.json`).

use prost_reflect::{DescriptorPool, FieldDescriptor, MessageDescriptor, MethodDescriptor, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

/// The API's descriptors.
pub(crate) static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(crate::DESCRIPTOR_SET).expect("the build wrote a valid descriptor set")
});

/// One method's HTTP route.
#[derive(Debug)]
pub(crate) struct Route {
    pub method: MethodDescriptor,
    pub http_method: http::Method,
    pub path: Vec<Segment>,
    pub body: Body,
}

#[derive(Debug)]
pub(crate) enum Segment {
    Text(String),
    Field(FieldDescriptor),
}

/// What goes in the HTTP request's body.
#[derive(Debug)]
pub(crate) enum Body {
    /// Nothing: the fields not in the path are query parameters.
    None,
    /// Every field not in the path, as one JSON object.
    Rest,
    /// This field's value.
    Field(FieldDescriptor),
}

impl Route {
    /// The fields the path takes (not sent again in the body or query).
    pub fn in_path(&self, field: &FieldDescriptor) -> bool {
        self.path.iter().any(|s| matches!(s, Segment::Field(f) if f.number() == field.number()))
    }

    pub fn input(&self) -> MessageDescriptor {
        self.method.input()
    }
}

/// The routes of `service` (a full name, `tally.v1.Commands`), by gRPC path
/// (`/tally.v1.Commands/PostTransaction`).
pub(crate) fn routes_of(service: &str) -> HashMap<String, Arc<Route>> {
    let service = POOL.get_service_by_name(service).expect("a service of the API");
    service
        .methods()
        .map(|method| {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let route = route(method).unwrap_or_else(|e| panic!("{path}: {e}"));
            (path, Arc::new(route))
        })
        .collect()
}

fn route(method: MethodDescriptor) -> Result<Route, String> {
    let extension = POOL.get_extension_by_name("tally.v1.http").ok_or("no tally.v1.http option")?;
    let options = method.options();
    let rule = options.get_extension(&extension);
    let Value::Message(rule) = rule.as_ref() else { return Err("the http option is not a message".into()) };
    let text = |name: &str| match rule.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let http_method = http::Method::from_bytes(text("method").as_bytes()).map_err(|e| e.to_string())?;
    let input = method.input();
    let mut path = Vec::new();
    for part in text("path").split_inclusive(['{', '}']) {
        match part.strip_suffix('}') {
            Some(name) => {
                let field = input.get_field_by_name(name).ok_or(format!("no field {name} for the path"))?;
                path.push(Segment::Field(field));
            }
            None => path.push(Segment::Text(part.trim_end_matches('{').to_owned())),
        }
    }
    let body = match text("body").as_str() {
        "" => Body::None,
        "*" => Body::Rest,
        name => Body::Field(input.get_field_by_name(name).ok_or(format!("no body field {name}"))?),
    };
    if method.is_client_streaming() {
        return Err("client streaming has no HTTP route".into());
    }
    Ok(Route { method, http_method, path, body })
}

/// Whether `field` carries a JSON value's text (the `tally.v1.json` option).
pub(crate) fn is_json_text(field: &FieldDescriptor) -> bool {
    JSON_FIELDS.contains(field.full_name())
}

/// The full names of the fields with the `tally.v1.json` option, read from the descriptors once
/// (a field's options are decoded anew on each ask, and every field of every message asks).
static JSON_FIELDS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let json = POOL.get_extension_by_name("tally.v1.json").expect("declared in options.proto");
    POOL.all_messages()
        .flat_map(|message| message.fields().collect::<Vec<_>>())
        .filter(|field| matches!(field.options().get_extension(&json).as_ref(), Value::Bool(true)))
        .map(|field| field.full_name().to_owned())
        .collect()
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_a_route_whose_fields_exist() {
        for service in ["tally.v1.Commands", "tally.v1.Queries"] {
            let routes = routes_of(service);
            assert!(!routes.is_empty());
            for (path, route) in &routes {
                assert!(!route.path.is_empty(), "{path}");
                if route.http_method == http::Method::GET {
                    assert!(matches!(route.body, Body::None), "{path}: a GET has no body");
                }
            }
        }
        let post = &routes_of("tally.v1.Commands")["/tally.v1.Commands/PostTransaction"];
        assert_eq!(post.http_method, http::Method::POST);
        assert!(matches!(post.body, Body::Rest));
    }

    #[test]
    fn amounts_and_events_are_json_text() {
        let posting = POOL.get_message_by_name("tally.v1.Posting").unwrap();
        assert!(is_json_text(&posting.get_field_by_name("amount").unwrap()));
        assert!(!is_json_text(&posting.get_field_by_name("asset").unwrap()));
    }
}
