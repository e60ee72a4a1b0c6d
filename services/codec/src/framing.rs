//! The two framings around an Avro datum.

use crate::CodecError;

/// Avro single-object encoding marker.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// Confluent wire format marker.
pub const CONFLUENT_MAGIC: u8 = 0x00;

/// How the writer schema of a record is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// CRC-64-AVRO fingerprint of the schema's canonical form.
    SingleObject { fingerprint: u64 },
    /// A schema-registry id.
    Confluent { schema_id: u32 },
}

/// Splits a record into its framing and datum.
pub fn split(bytes: &[u8]) -> Result<(Framing, &[u8]), CodecError> {
    match bytes {
        [] => Err(CodecError::Empty),
        [0xC3, 0x01, rest @ ..] => {
            let (fp, datum) = rest.split_first_chunk::<8>().ok_or(CodecError::Truncated("fingerprint"))?;
            Ok((Framing::SingleObject { fingerprint: u64::from_le_bytes(*fp) }, datum))
        }
        [CONFLUENT_MAGIC, rest @ ..] => {
            let (id, datum) = rest.split_first_chunk::<4>().ok_or(CodecError::Truncated("schema id"))?;
            Ok((Framing::Confluent { schema_id: u32::from_be_bytes(*id) }, datum))
        }
        [first, ..] => Err(CodecError::UnknownFraming(*first)),
    }
}

/// The single-object header for a schema fingerprint.
pub fn single_object_header(fingerprint: u64) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[..2].copy_from_slice(&SINGLE_OBJECT_MAGIC);
    h[2..].copy_from_slice(&fingerprint.to_le_bytes());
    h
}

/// The Confluent header for a schema id.
pub fn confluent_header(schema_id: u32) -> [u8; 5] {
    let mut h = [CONFLUENT_MAGIC; 5];
    h[1..].copy_from_slice(&schema_id.to_be_bytes());
    h
}

/// A record in single-object encoding (as [`crate::Codec`] writes them) re-framed in the
/// Confluent framing under `schema_id`: the same datum behind `00` + the id.
///
/// # Panics
/// If `single_object` does not start with a single-object header (only Tally's own encodings
/// are passed here).
pub fn as_confluent(single_object: &[u8], schema_id: u32) -> Vec<u8> {
    let Ok((Framing::SingleObject { .. }, datum)) = split(single_object) else {
        panic!("as_confluent takes a record in single-object encoding");
    };
    confluent_header(schema_id).iter().chain(datum).copied().collect()
}

/// The schema id of a record in the Confluent framing; `None` for any other record.
pub fn confluent_schema_id(bytes: &[u8]) -> Option<u32> {
    match split(bytes) {
        Ok((Framing::Confluent { schema_id }, _)) => Some(schema_id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_object_record_reframed_keeps_its_datum_behind_the_id() {
        let single: Vec<u8> = single_object_header(0xfeed).iter().chain(b"datum").copied().collect();
        let framed = as_confluent(&single, 7);
        assert_eq!(split(&framed).unwrap(), (Framing::Confluent { schema_id: 7 }, &b"datum"[..]));
    }
}
