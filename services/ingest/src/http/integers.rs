//! Integers in request bodies, read exactly in every form JSON writes a number.
//!
//! JSON Schema (the dialect of the OpenAPI documents) calls a number an integer when its value
//! is one, however it is written: `274`, `274.0` and `2.74e2` are the same integer (JSON Schema
//! 2020-12, validation section 6.1.1). serde reads only the first form into an `i128`, and reads
//! the others through a double, which is not exact beyond 2^53. So the front door reads such
//! fields from the number's own text, in decimal, and takes any form whose value is an integer
//! in the field's range; a fraction that is not zero, or a value out of range, is refused.

use serde::Deserialize;
use serde::de::{Deserializer, Error};
use serde_json::value::RawValue;

/// Most decimal digits an `i128` has.
const I128_DIGITS_MAX: usize = 39;

/// The integer a JSON number literal denotes, if it is one within `i128`'s range. `None` for
/// text that is not a JSON number, for a fraction, and for values out of range.
pub(crate) fn exact_integer(literal: &str) -> Option<i128> {
    let (negative, unsigned) = match literal.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.strip_prefix('+').unwrap_or(exponent)),
        None => (unsigned, "0"),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let exponent_digits = exponent.strip_prefix('-').unwrap_or(exponent);
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || exponent_digits.is_empty() {
        return None;
    }
    if !all_digits(exponent_digits) {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Some(0);
    }
    // The value is digits x 10^shift; a shift this large either way cannot be an i128.
    let exponent: i64 =
        exponent.parse().unwrap_or(if exponent.starts_with('-') { i64::MIN } else { i64::MAX });
    let shift = exponent.checked_sub(fraction.len() as i64)?;
    let integer = match shift {
        ..0 => {
            let dropped = usize::try_from(shift.unsigned_abs()).ok()?;
            let kept = digits.len().checked_sub(dropped)?;
            (digits[kept..].bytes().all(|b| b == b'0')).then(|| digits[..kept].to_owned())?
        }
        _ => {
            let zeros = usize::try_from(shift).ok().filter(|z| digits.len() + z <= I128_DIGITS_MAX)?;
            format!("{digits}{}", "0".repeat(zeros))
        }
    };
    if integer.len() > I128_DIGITS_MAX {
        return None;
    }
    let magnitude: u128 = integer.parse().ok()?;
    match negative {
        true => 0i128.checked_sub_unsigned(magnitude),
        false => i128::try_from(magnitude).ok(),
    }
}

/// An integer field of `T` (an `i128` or narrower), read by [`exact_integer`].
pub(crate) fn integer<'de, D: Deserializer<'de>, T: TryFrom<i128>>(d: D) -> Result<T, D::Error> {
    in_range(&Box::<RawValue>::deserialize(d)?)
}

/// An optional integer field (`null` or absent is `None`; give it `#[serde(default)]`).
pub(crate) fn optional_integer<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let raw = Option::<Box<RawValue>>::deserialize(d)?;
    raw.filter(|raw| raw.get() != "null").map(|raw| in_range(&raw)).transpose()
}

/// An optional whole number that the log carries as an Avro `long`: 0 to 2^63 - 1.
pub(crate) fn optional_long<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let value: Option<i64> = optional_integer(d)?;
    value.map(|v| u64::try_from(v).map_err(|_| D::Error::custom(format!("{v} is negative")))).transpose()
}

/// An optional list of integer fields (`null` or absent is `None`; give it `#[serde(default)]`).
pub(crate) fn optional_integers<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<i128>>, D::Error> {
    let raw = Option::<Vec<Box<RawValue>>>::deserialize(d)?;
    raw.map(|items| items.iter().map(|raw| in_range(raw)).collect()).transpose()
}

/// The integer `raw` denotes, as a `T`; an error naming the text when it is not one in range.
fn in_range<T: TryFrom<i128>, E: Error>(raw: &RawValue) -> Result<T, E> {
    exact_integer(raw.get())
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| E::custom(format!("{} is not an integer in range", raw.get())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_form_of_an_integer_is_read_exactly() {
        for (text, value) in [
            ("0", Some(0)),
            ("-0", Some(0)),
            ("0.0", Some(0)),
            ("0e999999999999999999999", Some(0)),
            ("274", Some(274)),
            ("274.0", Some(274)),
            ("2.74e2", Some(274)),
            ("2.74E+2", Some(274)),
            ("27400e-2", Some(274)),
            ("-274.000", Some(-274)),
            ("170141183460469231731687303715884105727", Some(i128::MAX)),
            ("-170141183460469231731687303715884105728", Some(i128::MIN)),
            ("1.7014118346046923173168730371588410572700e38", Some(i128::MAX)),
            ("170141183460469231731687303715884105728", None),
            ("1e39", None),
            ("1e99999999999999999999", None),
            ("2.5", None),
            ("1e-1", None),
            ("27401e-2", None),
            ("\"5\"", None),
            ("true", None),
            ("", None),
            ("-", None),
            ("1e", None),
        ] {
            assert_eq!(exact_integer(text), value, "{text}");
        }
    }

    proptest! {
        /// Any i128, written with a fraction of zeros and an exponent that moves the point,
        /// reads back as itself.
        #[test]
        fn any_written_form_reads_back(n in any::<i128>(), zeros in 0usize..5, shift in 0usize..40) {
            let text = n.unsigned_abs().to_string();
            let shift = shift.min(text.len() - 1);
            let (head, tail) = text.split_at(text.len() - shift);
            let sign = if n < 0 { "-" } else { "" };
            let written = format!("{sign}{head}.{tail}{}e{shift}", "0".repeat(zeros));
            prop_assert_eq!(exact_integer(&written), Some(n), "{}", written);
            prop_assert_eq!(exact_integer(&n.to_string()), Some(n));
        }
    }
}
