//! Records as Tally's services see them: what a consumer delivers ([`Record`]) and the headers
//! it carries and a producer sends ([`Headers`]). librdkafka's own types stay inside this crate.

use rdkafka::Message;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use std::borrow::Cow;

/// A record's headers, in order. Kafka headers are a list: a name may repeat, a value may be
/// null (`None`); [`Headers::get`] gives the first value of a name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Option<Vec<u8>>)>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// These headers and `name: value` after them.
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Headers {
        self.0.push((name.to_owned(), Some(value.as_ref().to_vec())));
        self
    }

    /// The first value of `name` (`None` when absent or null).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }

    /// The first value of `name` as text (`None` when absent, null or not UTF-8).
    pub fn text(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.get(name)?).ok()
    }

    /// Every header, in order: name and value (`None`: null).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_deref()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The headers of a librdkafka message.
    pub(crate) fn of(message: &impl Message) -> Headers {
        let Some(headers) = message.headers() else { return Headers::new() };
        Headers(headers.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect())
    }

    /// As librdkafka sends them.
    pub(crate) fn to_owned_headers(&self) -> OwnedHeaders {
        self.0.iter().fold(OwnedHeaders::new_with_capacity(self.0.len()), |headers, (key, value)| {
            headers.insert(Header { key: key.as_str(), value: value.as_deref() })
        })
    }
}

/// One record read from a topic partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The value; a null value reads as empty.
    pub payload: Vec<u8>,
    pub headers: Headers,
    /// The record's timestamp, milliseconds since the Unix epoch (`None` when it has none).
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// A copy of a librdkafka message.
    pub(crate) fn of(message: &impl Message) -> Record {
        Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers: Headers::of(message),
            timestamp_ms: message.timestamp().to_millis(),
        }
    }

    /// The key as text, for logs and error details (invalid UTF-8 replaced).
    pub fn key_text(&self) -> Option<Cow<'_, str>> {
        self.key.as_deref().map(String::from_utf8_lossy)
    }
}

/// A record to send: where, its key, value and headers.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    /// The partition; `None`: the one the key hashes to (Kafka's default partitioner, murmur2).
    pub partition: Option<i32>,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub headers: Option<&'a Headers>,
}

impl<'a> Outgoing<'a> {
    /// `payload` to `topic`, partitioned by its key (none yet).
    pub fn to(topic: &'a str, payload: &'a [u8]) -> Outgoing<'a> {
        Outgoing { topic, partition: None, key: None, payload, headers: None }
    }

    pub fn key(self, key: &'a [u8]) -> Outgoing<'a> {
        Outgoing { key: Some(key), ..self }
    }

    pub fn partition(self, partition: i32) -> Outgoing<'a> {
        Outgoing { partition: Some(partition), ..self }
    }

    pub fn headers(self, headers: &'a Headers) -> Outgoing<'a> {
        Outgoing { headers: Some(headers), ..self }
    }
}
