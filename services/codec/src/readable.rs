//! Which writer schemas from a schema registry Tally reads records of.
//!
//! Avro schema resolution (the specification's "Schema Resolution" section) is not enough:
//! Tally reads a datum with its writer schema and maps the value onto its own types by field and
//! branch name (`wire.rs` says why), so a type promotion that resolution allows (an `int` where
//! Tally has a `long`, `bytes` for `string`, a decimal of another scale) would reach Tally's
//! mapping as a value it does not expect, or worse, as the same number at another scale. And a
//! recursive or very deep writer schema would let a small record drive the decoder's recursion
//! as deep as the record is long. So a writer schema must:
//! - nest no deeper than [`WRITER_DEPTH_MAX`] and contain no recursive type;
//! - have every field of Tally's schema (by name, in any order), each of the same type: records
//!   and enums of the same full name, decimals of the same precision and scale, the same
//!   primitive; it may have more fields, which are read and ignored;
//! - in a union, only branches Tally's union has (matched by full name for named types);
//!   in an enum, only symbols Tally's enum has.

use apache_avro::Schema;
use apache_avro::schema::{InnerDecimalSchema, Name, NamesRef, ResolvedSchema};
use std::collections::HashMap;
use std::mem::discriminant;

/// Deepest nesting of records, arrays, maps and unions a writer schema may have (Tally's own
/// schemas nest about 6 deep).
pub const WRITER_DEPTH_MAX: usize = 32;

/// Whether records written with `writer` can be read as `reader` by Tally (see the module
/// documentation); the error says where and why not.
pub(crate) fn check(writer: &Schema, reader: &Schema) -> Result<(), String> {
    let resolved_writer = ResolvedSchema::try_from(writer).map_err(|e| e.to_string())?;
    let resolved_reader = ResolvedSchema::try_from(reader).map_err(|e| e.to_string())?;
    let writer_names = resolved_writer.get_names();
    let height = Heights { names: writer_names, known: HashMap::new(), open: Vec::new() }.of(writer)?;
    if height > WRITER_DEPTH_MAX {
        return Err(format!("nested {height} levels deep; at most {WRITER_DEPTH_MAX} are read"));
    }
    Same { writer: writer_names, reader: resolved_reader.get_names() }.check(writer, reader, "")
}

/// The height of each named type of a writer schema, computed once (a schema that reuses a type
/// in many places is walked in linear time); a type met again while its own height is being
/// computed is recursive.
struct Heights<'s> {
    names: &'s NamesRef<'s>,
    known: HashMap<&'s Name, usize>,
    open: Vec<&'s Name>,
}

impl<'s> Heights<'s> {
    fn of(&mut self, schema: &'s Schema) -> Result<usize, String> {
        let below = |this: &mut Self, children: Vec<&'s Schema>| -> Result<usize, String> {
            let mut highest = 0;
            for child in children {
                highest = highest.max(this.of(child)?);
            }
            Ok(highest + 1)
        };
        match schema {
            Schema::Ref { name } => {
                if self.open.contains(&name) {
                    return Err(format!(
                        "{} contains itself (recursive types are not read)",
                        name.fullname(None)
                    ));
                }
                if let Some(height) = self.known.get(name) {
                    return Ok(*height);
                }
                let definition =
                    self.names.get(name).ok_or_else(|| format!("unknown type {}", name.fullname(None)))?;
                self.of(definition)
            }
            Schema::Record(record) => {
                self.open.push(&record.name);
                let height = below(self, record.fields.iter().map(|f| &f.schema).collect());
                self.open.pop();
                let height = height?;
                self.known.insert(&record.name, height);
                Ok(height)
            }
            Schema::Array(array) => below(self, vec![&array.items]),
            Schema::Map(map) => below(self, vec![&map.types]),
            Schema::Union(union) => below(self, union.variants().iter().collect()),
            _ => Ok(1),
        }
    }
}

/// The writer's and the reader's named types, to follow references.
struct Same<'s> {
    writer: &'s NamesRef<'s>,
    reader: &'s NamesRef<'s>,
}

impl Same<'_> {
    fn check(&self, writer: &Schema, reader: &Schema, path: &str) -> Result<(), String> {
        let (w, r) = (deref(writer, self.writer), deref(reader, self.reader));
        let at = if path.is_empty() { String::new() } else { format!("{path}: ") };
        let mismatch = || Err(format!("{at}{} where Tally has {}", kind(w), kind(r)));
        match (w, r) {
            (Schema::Record(a), Schema::Record(b)) => {
                if a.name != b.name {
                    return mismatch();
                }
                for field in &b.fields {
                    let inner =
                        if path.is_empty() { field.name.clone() } else { format!("{path}.{}", field.name) };
                    let Some(i) = a.lookup.get(&field.name) else {
                        return Err(format!("{inner}: missing (every field of Tally's schema is needed)"));
                    };
                    self.check(&a.fields[*i].schema, &field.schema, &inner)?;
                }
                Ok(())
            }
            (Schema::Union(a), Schema::Union(b)) => {
                for branch in a.variants() {
                    let branch = deref(branch, self.writer);
                    let ours = b.variants().iter().find(|o| same_branch(branch, deref(o, self.reader)));
                    let Some(ours) = ours else {
                        return Err(format!(
                            "{at}union branch {} that Tally's union does not have",
                            kind(branch)
                        ));
                    };
                    self.check(branch, ours, &format!("{path}[{}]", short(branch)))?;
                }
                Ok(())
            }
            (Schema::Array(a), Schema::Array(b)) => self.check(&a.items, &b.items, &format!("{path}[]")),
            (Schema::Map(a), Schema::Map(b)) => self.check(&a.types, &b.types, &format!("{path}{{}}")),
            (Schema::Enum(a), Schema::Enum(b)) => match a.symbols.iter().find(|s| !b.symbols.contains(s)) {
                _ if a.name != b.name => mismatch(),
                Some(extra) => Err(format!("{at}symbol {extra} that Tally's enum does not have")),
                None => Ok(()),
            },
            (Schema::Fixed(a), Schema::Fixed(b)) if a.name == b.name && a.size == b.size => Ok(()),
            (Schema::Decimal(a), Schema::Decimal(b)) => {
                let same_inner = match (&a.inner, &b.inner) {
                    (InnerDecimalSchema::Bytes, InnerDecimalSchema::Bytes) => true,
                    (InnerDecimalSchema::Fixed(x), InnerDecimalSchema::Fixed(y)) => x.size == y.size,
                    _ => false,
                };
                if a.precision == b.precision && a.scale == b.scale && same_inner {
                    Ok(())
                } else {
                    mismatch()
                }
            }
            (Schema::Fixed(_) | Schema::Duration(_) | Schema::Uuid(_), _) => {
                if w == r {
                    Ok(())
                } else {
                    mismatch()
                }
            }
            _ if is_leaf(w) && discriminant(w) == discriminant(r) => Ok(()),
            _ => mismatch(),
        }
    }
}

fn deref<'a>(schema: &'a Schema, names: &'a NamesRef<'a>) -> &'a Schema {
    match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        other => other,
    }
}

/// Union branches are told apart by full name for named types, by type otherwise.
fn same_branch(a: &Schema, b: &Schema) -> bool {
    match (a, b) {
        (Schema::Record(x), Schema::Record(y)) => x.name == y.name,
        (Schema::Enum(x), Schema::Enum(y)) => x.name == y.name,
        (Schema::Fixed(x), Schema::Fixed(y)) => x.name == y.name,
        _ => discriminant(a) == discriminant(b),
    }
}

/// Types without parts of their own to compare.
fn is_leaf(schema: &Schema) -> bool {
    !matches!(
        schema,
        Schema::Record(_)
            | Schema::Union(_)
            | Schema::Array(_)
            | Schema::Map(_)
            | Schema::Enum(_)
            | Schema::Fixed(_)
            | Schema::Decimal(_)
            | Schema::Duration(_)
            | Schema::Uuid(_)
            | Schema::Ref { .. }
    )
}

/// A short name of a type for messages (never the whole schema).
fn kind(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {} ({} bytes)", f.name.fullname(None), f.size),
        Schema::Decimal(d) => format!("decimal({}, {})", d.precision, d.scale),
        other => short(other),
    }
}

fn short(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => r.name.name().to_string(),
        Schema::Enum(e) => e.name.name().to_string(),
        Schema::Fixed(f) => f.name.name().to_string(),
        Schema::Ref { name } => name.name().to_string(),
        Schema::Decimal(_) => "decimal".into(),
        other => {
            let debug = format!("{other:?}");
            debug.split(['(', ' ', '{']).next().unwrap_or("?").to_lowercase()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> serde_json::Value {
        serde_json::from_str(crate::source(crate::Kind::Command)).unwrap()
    }

    fn checked(writer: &serde_json::Value) -> Result<(), String> {
        let reader = Schema::parse_str(crate::source(crate::Kind::Command)).unwrap();
        check(&Schema::parse_str(&writer.to_string()).map_err(|e| e.to_string())?, &reader)
    }

    /// The command schema with `edit` applied to the record named `record` (anywhere in it).
    fn edited(record: &str, edit: &dyn Fn(&mut serde_json::Value)) -> serde_json::Value {
        fn walk(v: &mut serde_json::Value, record: &str, edit: &dyn Fn(&mut serde_json::Value)) {
            match v {
                serde_json::Value::Object(m) => {
                    if m.get("name").and_then(|n| n.as_str()) == Some(record)
                        && m.get("type") == Some(&"record".into())
                    {
                        edit(v);
                        return;
                    }
                    m.values_mut().for_each(|x| walk(x, record, edit));
                }
                serde_json::Value::Array(a) => a.iter_mut().for_each(|x| walk(x, record, edit)),
                _ => {}
            }
        }
        let mut schema = command();
        walk(&mut schema, record, edit);
        schema
    }

    fn field<'a>(record: &'a mut serde_json::Value, name: &str) -> &'a mut serde_json::Value {
        let fields = record["fields"].as_array_mut().unwrap();
        fields.iter_mut().find(|f| f["name"] == name).unwrap()
    }

    #[test]
    fn tallys_own_schema_and_additions_are_read() {
        checked(&command()).unwrap();
        let extra = edited("Command", &|r| {
            r["fields"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": "note", "type": "string", "default": ""}));
        });
        checked(&extra).unwrap();
        let reversed = edited("Command", &|r| r["fields"].as_array_mut().unwrap().reverse());
        checked(&reversed).unwrap();
        let fewer_branches = edited("Command", &|r| {
            let body = field(r, "body");
            let branches = body["type"].as_array_mut().unwrap();
            branches.truncate(1);
        });
        checked(&fewer_branches).unwrap();
    }

    #[test]
    fn promotions_other_scales_and_other_names_are_refused() {
        let cases: Vec<(serde_json::Value, &str)> = vec![
            (
                edited("Command", &|r| field(r, "tenant")["type"] = "bytes".into()),
                "tenant: bytes where Tally has string",
            ),
            (
                edited("Command", &|r| r["namespace"] = "com.evil".into()),
                "record com.evil.Command where Tally has record io.tally.Command",
            ),
            (
                edited("Command", &|r| {
                    r["fields"].as_array_mut().unwrap().retain(|f| f["name"] != "actor");
                }),
                "actor: missing",
            ),
            (
                edited("Command", &|r| {
                    let branches = field(r, "body")["type"].as_array_mut().unwrap();
                    branches.push(serde_json::json!({"type": "record", "name": "Hack", "fields": []}));
                }),
                "union branch record io.tally.Hack that Tally's union does not have",
            ),
        ];
        for (schema, why) in cases {
            let e = checked(&schema).unwrap_err();
            assert!(e.contains(why), "{e} (expected {why})");
            assert!(e.len() < 300, "a short message: {e}");
        }
        // Every amount is a decimal of one scale: another scale would read 1.000 as 1000.
        let text = crate::source(crate::Kind::Command);
        let scaled = text.replacen("\"scale\": 0", "\"scale\": 3", 1);
        assert_ne!(scaled, text, "the command schema has decimals of scale 0");
        let e = checked(&serde_json::from_str(&scaled).unwrap()).unwrap_err();
        assert!(e.contains("decimal(39, 3) where Tally has decimal(39, 0)"), "{e}");
        // An int where Tally has a long (in an optional field: the branch is not Tally's).
        let long_to_int = text.replacen("\"long\"", "\"int\"", 1);
        let e = checked(&serde_json::from_str(&long_to_int).unwrap()).unwrap_err();
        assert!(e.contains("union branch int"), "{e}");
    }

    #[test]
    fn recursive_and_deep_writers_are_refused() {
        let recursive = edited("Command", &|r| {
            r["fields"].as_array_mut().unwrap().push(serde_json::json!({
                "name": "next", "default": null,
                "type": ["null", {"type": "record", "name": "Node", "fields": [{"name": "n", "type": ["null", "Node"]}]}]
            }));
        });
        let e = checked(&recursive).unwrap_err();
        assert!(e.contains("io.tally.Node contains itself"), "{e}");
        let mut nested = serde_json::json!("string");
        for i in 0..WRITER_DEPTH_MAX {
            nested = serde_json::json!({"type": "record", "name": format!("N{i}"), "fields": [{"name": "x", "type": nested}]});
        }
        let deep = edited("Command", &|r| {
            r["fields"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": "deep", "type": nested.clone()}));
        });
        assert!(checked(&deep).unwrap_err().contains("levels deep"));
        // A type reused in many places is walked once per use of its height, not per path.
        let mut wide =
            serde_json::json!({"type": "record", "name": "W0", "fields": [{"name": "x", "type": "long"}]});
        for i in 1..25 {
            let fields: Vec<_> = (0..2)
                .map(|j| serde_json::json!({"name": format!("f{j}"), "type": if j == 0 { wide.clone() } else { format!("W{}", i - 1).into() }}))
                .collect();
            wide = serde_json::json!({"type": "record", "name": format!("W{i}"), "fields": fields});
        }
        let reused = edited("Command", &|r| {
            r["fields"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({"name": "wide", "type": wide.clone()}));
        });
        checked(&reused).unwrap();
    }
}
