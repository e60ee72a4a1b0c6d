//! Small helpers between Tally's types and Avro `Value`s. Decoding helpers turn every
//! surprise into a `CodecError::Invalid` naming the field.

use crate::CodecError;
use apache_avro::Decimal;
use apache_avro::types::Value;
use std::collections::{BTreeMap, HashMap};
use tally_core::Amount;

pub fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

pub fn long(n: u64) -> Value {
    Value::Long(n as i64)
}

/// i128 as an Avro decimal: 16 bytes, big-endian two's complement.
pub fn amount(a: Amount) -> Value {
    Value::Decimal(Decimal::from(a.to_be_bytes()))
}

/// A `["null", T]` union.
pub fn optional(v: Option<Value>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(v)),
    }
}

pub fn array<T>(items: &[T], f: impl Fn(&T) -> Value) -> Value {
    Value::Array(items.iter().map(f).collect())
}

pub fn map(m: &BTreeMap<String, String>) -> Value {
    Value::Map(m.iter().map(|(k, v)| (k.clone(), string(v.clone()))).collect())
}

pub fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn invalid(field: &'static str, why: impl Into<String>) -> CodecError {
    CodecError::Invalid { field, why: why.into() }
}

/// The fields of a decoded record, taken out by name.
pub struct Fields(Vec<(String, Value)>);

impl Fields {
    pub fn of(field: &'static str, v: Value) -> Result<Self, CodecError> {
        match v {
            Value::Record(fields) => Ok(Fields(fields)),
            other => Err(invalid(field, format!("expected a record, got {other:?}"))),
        }
    }

    pub fn take(&mut self, field: &'static str) -> Result<Value, CodecError> {
        let i = self.0.iter().position(|(k, _)| k == field).ok_or_else(|| invalid(field, "missing"))?;
        Ok(self.0.swap_remove(i).1)
    }

    /// A field that older writer schemas may not have.
    pub fn optional_field(&mut self, field: &'static str) -> Result<Option<Value>, CodecError> {
        match self.0.iter().position(|(k, _)| k == field) {
            Some(i) => Ok(Some(self.0.swap_remove(i).1)),
            None => Ok(None),
        }
    }

    pub fn string(&mut self, field: &'static str) -> Result<String, CodecError> {
        as_string(field, self.take(field)?)
    }

    /// A string field parsed into a validated type.
    pub fn parse<T>(&mut self, field: &'static str) -> Result<T, CodecError>
    where
        T: TryFrom<String>,
        T::Error: std::fmt::Display,
    {
        T::try_from(self.string(field)?).map_err(|e| invalid(field, e.to_string()))
    }

    pub fn asset(&mut self, field: &'static str) -> Result<tally_core::Asset, CodecError> {
        tally_core::Asset::parse(&self.string(field)?).map_err(|e| invalid(field, e.to_string()))
    }

    pub fn long(&mut self, field: &'static str) -> Result<i64, CodecError> {
        as_long(field, self.take(field)?)
    }

    pub fn unsigned(&mut self, field: &'static str) -> Result<u64, CodecError> {
        u64::try_from(self.long(field)?).map_err(|_| invalid(field, "must not be negative"))
    }

    pub fn amount(&mut self, field: &'static str) -> Result<Amount, CodecError> {
        as_amount(field, self.take(field)?)
    }

    pub fn optional(&mut self, field: &'static str) -> Result<Option<Value>, CodecError> {
        as_optional(field, self.take(field)?)
    }

    pub fn array(&mut self, field: &'static str) -> Result<Vec<Value>, CodecError> {
        match self.take(field)? {
            Value::Array(items) => Ok(items),
            other => Err(invalid(field, format!("expected an array, got {other:?}"))),
        }
    }

    pub fn metadata(&mut self, field: &'static str) -> Result<BTreeMap<String, String>, CodecError> {
        match self.take(field)? {
            Value::Map(m) => string_map(field, m),
            other => Err(invalid(field, format!("expected a map, got {other:?}"))),
        }
    }

    pub fn reason(&mut self, field: &'static str) -> Result<tally_core::Reason, CodecError> {
        match self.take(field)? {
            Value::Enum(_, symbol) => tally_core::Reason::from_code(&symbol)
                .ok_or_else(|| invalid(field, format!("unknown reason {symbol}"))),
            other => Err(invalid(field, format!("expected an enum, got {other:?}"))),
        }
    }
}

fn string_map(
    field: &'static str,
    m: HashMap<String, Value>,
) -> Result<BTreeMap<String, String>, CodecError> {
    m.into_iter().map(|(k, v)| Ok((k, as_string(field, v)?))).collect()
}

pub fn as_string(field: &'static str, v: Value) -> Result<String, CodecError> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(invalid(field, format!("expected a string, got {other:?}"))),
    }
}

pub fn as_long(field: &'static str, v: Value) -> Result<i64, CodecError> {
    match v {
        Value::Long(n) | Value::TimestampMillis(n) => Ok(n),
        other => Err(invalid(field, format!("expected a long, got {other:?}"))),
    }
}

/// Accepts any length of big-endian two's complement that fits in i128.
pub fn as_amount(field: &'static str, v: Value) -> Result<Amount, CodecError> {
    let Value::Decimal(d) = v else {
        return Err(invalid(field, "expected a decimal"));
    };
    let bytes = Vec::<u8>::try_from(&d).map_err(|e| invalid(field, e.to_string()))?;
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let sign = if negative { 0xFF } else { 0x00 };
    let significant = bytes.iter().position(|b| *b != sign).map_or(&[][..], |i| &bytes[i..]);
    // Keep one sign byte if the first significant byte's top bit disagrees with the sign.
    if significant.len() > 16 || (significant.len() == 16 && (significant[0] & 0x80 != 0) != negative) {
        return Err(invalid(field, "amount does not fit in 128 bits"));
    }
    let mut buf = [sign; 16];
    buf[16 - significant.len()..].copy_from_slice(significant);
    Ok(i128::from_be_bytes(buf))
}

pub fn as_optional(field: &'static str, v: Value) -> Result<Option<Value>, CodecError> {
    match v {
        Value::Union(_, inner) => match *inner {
            Value::Null => Ok(None),
            other => Ok(Some(other)),
        },
        Value::Null => Ok(None),
        other => Err(invalid(field, format!("expected an optional value, got {other:?}"))),
    }
}

/// A union branch: its index and record fields.
pub fn as_union(field: &'static str, v: Value) -> Result<(u32, Fields), CodecError> {
    match v {
        Value::Union(i, inner) => Ok((i, Fields::of(field, *inner)?)),
        other => Err(invalid(field, format!("expected a union, got {other:?}"))),
    }
}

pub fn bad_branch(field: &'static str, index: u32) -> CodecError {
    invalid(field, format!("unknown branch {index}"))
}
