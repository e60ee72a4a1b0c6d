//! The codec: commands and events to and from framed Avro.

use crate::framing::{self, Framing};
use crate::schemas::{Family, Kind, Writer};
use crate::values::*;
use crate::{ALLOCATION_MAX, CodecError, RECORD_LEN_MAX};
use apache_avro::Schema;
use apache_avro::types::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tally_core::log::LogRecord;
use tally_core::*;

/// Encodes and decodes Tally's records. Cheap to share (`Arc`); build once.
pub struct Codec {
    command: Family,
    event: Family,
    claim: Family,
    dead_lettered: Family,
}

/// The writer schema that a Confluent schema id stands for, checked to be readable as Tally's
/// current schema of its kind ([`Codec::confluent_writer`]). Cheap to clone (shared).
#[derive(Clone)]
pub struct ConfluentWriter(Arc<(Kind, Writer)>);

impl ConfluentWriter {
    /// The kind of record it was checked for.
    pub fn kind(&self) -> Kind {
        self.0.0
    }
}

impl std::fmt::Debug for ConfluentWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConfluentWriter({}, {:016x})", self.0.0, crate::fingerprint(self.0.1.schema()))
    }
}

/// The Confluent schema ids a decode accepts, with their writer schemas.
pub type ConfluentWriters = HashMap<u32, ConfluentWriter>;

/// The schema a datum was written with: an embedded version, or one a registry id stands for.
enum WriterRef<'a> {
    Embedded(&'a Writer),
    Confluent(&'a ConfluentWriter),
}

impl std::ops::Deref for WriterRef<'_> {
    type Target = Writer;
    fn deref(&self) -> &Writer {
        match self {
            WriterRef::Embedded(w) => w,
            WriterRef::Confluent(c) => &c.0.1,
        }
    }
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    /// Loads every embedded schema and each committed version of it. Also caps apache-avro's
    /// allocations at [`ALLOCATION_MAX`] for the whole process.
    pub fn new() -> Self {
        apache_avro::util::max_allocation_bytes(ALLOCATION_MAX);
        Codec {
            command: Family::load(Kind::Command),
            event: Family::load(Kind::Event),
            claim: Family::load(Kind::Claim),
            dead_lettered: Family::load(Kind::DeadLettered),
        }
    }

    /// The writer for Confluent-framed records of `kind` with `schema_id`, written with
    /// `writer_schema_json` (the Avro schema a registry holds under that id). Fails with
    /// [`CodecError::UnreadableSchema`] as [`Codec::readable_as_current`] does, the id named.
    pub fn confluent_writer(
        &self,
        schema_id: u32,
        kind: Kind,
        writer_schema_json: &str,
    ) -> Result<ConfluentWriter, CodecError> {
        let in_context = |why: String| CodecError::UnreadableSchema(format!("schema id {schema_id}: {why}"));
        let writer =
            self.readable_as_current(kind, writer_schema_json).map_err(|e| in_context(e.to_string()))?;
        Ok(ConfluentWriter(Arc::new((kind, Writer::new(writer).map_err(|e| in_context(e.to_string()))?))))
    }

    /// Parses `writer_schema_json` and checks that records written with it can be read as the
    /// current schema of `kind` by Tally's rule, stricter than Avro schema resolution
    /// ([`crate::readable`]: the same types field by field, no promotions, no recursion, at most
    /// [`crate::WRITER_DEPTH_MAX`] deep). Fails with [`CodecError::UnreadableSchema`] saying where
    /// and why not.
    pub fn readable_as_current(&self, kind: Kind, writer_schema_json: &str) -> Result<Schema, CodecError> {
        let writer = Schema::parse_str(writer_schema_json)
            .map_err(|e| CodecError::UnreadableSchema(format!("not an Avro schema: {e}")))?;
        crate::readable::check(&writer, self.family(kind).current().schema()).map_err(|why| {
            CodecError::UnreadableSchema(format!("not readable as the current {kind} schema: {why}"))
        })?;
        Ok(writer)
    }

    /// The fingerprint that single-object headers of new records carry.
    pub fn fingerprint(&self, kind: Kind) -> u64 {
        self.family(kind).current_fingerprint
    }

    /// A command as a record of the commands topic: single-object encoded with the current schema.
    pub fn encode_command(&self, command: &Command) -> Vec<u8> {
        self.encode(&self.command, command_value(&self.command, command))
    }

    /// A record of the commands topic, in either framing and any known schema version; every
    /// failure (framing, schema, datum, a field breaking the rules) is a [`CodecError`].
    /// Confluent-framed records fail with [`CodecError::UnknownSchemaId`]; see
    /// [`Codec::decode_command_with`].
    pub fn decode_command(&self, bytes: &[u8]) -> Result<Command, CodecError> {
        self.decode_command_with(bytes, &ConfluentWriters::new())
    }

    /// Like [`Codec::decode_command`], also accepting the Confluent schema ids of `confluent`
    /// (checked for commands).
    pub fn decode_command_with(
        &self,
        bytes: &[u8],
        confluent: &ConfluentWriters,
    ) -> Result<Command, CodecError> {
        let (value, writer, _) = self.decode(&[&self.command], bytes, confluent)?;
        command_from(&writer, value)
    }

    /// A record of the events topic: an event (with the epoch of its writer and the offset of
    /// the command it answers), an ownership claim, or a dead-letter marker.
    pub fn encode_log_record(&self, log_record: &LogRecord) -> Vec<u8> {
        match log_record {
            LogRecord::Event { epoch, command_offset, event } => {
                self.encode(&self.event, event_value(&self.event, *epoch, *command_offset, event))
            }
            LogRecord::Claim { epoch, owner } => self
                .encode(&self.claim, record(vec![("epoch", long(*epoch)), ("owner", string(owner.clone()))])),
            LogRecord::DeadLettered { epoch, command_offset, reason } => self.encode(
                &self.dead_lettered,
                record(vec![
                    ("epoch", long(*epoch)),
                    ("command_offset", Value::Long(*command_offset)),
                    ("reason", string(reason.clone())),
                ]),
            ),
        }
    }

    /// A record of the events topic (event, claim or dead-letter marker), told apart by its writer
    /// schema; fails with a [`CodecError`] like [`Codec::decode_command`].
    pub fn decode_log_record(&self, bytes: &[u8]) -> Result<LogRecord, CodecError> {
        self.decode_log_record_with(bytes, &ConfluentWriters::new())
    }

    /// Like [`Codec::decode_log_record`], also accepting the Confluent schema ids of `confluent`.
    pub fn decode_log_record_with(
        &self,
        bytes: &[u8],
        confluent: &ConfluentWriters,
    ) -> Result<LogRecord, CodecError> {
        let families = [&self.event, &self.claim, &self.dead_lettered];
        let (value, writer, kind) = self.decode(&families, bytes, confluent)?;
        match kind {
            Kind::Claim => {
                let mut f = Fields::of("claim", value)?;
                Ok(LogRecord::Claim { epoch: f.unsigned("epoch")?, owner: f.string("owner")? })
            }
            Kind::DeadLettered => {
                let mut f = Fields::of("dead_lettered", value)?;
                Ok(LogRecord::DeadLettered {
                    epoch: f.unsigned("epoch")?,
                    command_offset: f.long("command_offset")?,
                    reason: f.string("reason")?,
                })
            }
            _ => event_from(&writer, value),
        }
    }

    fn family(&self, kind: Kind) -> &Family {
        match kind {
            Kind::Command => &self.command,
            Kind::Event => &self.event,
            Kind::Claim => &self.claim,
            Kind::DeadLettered => &self.dead_lettered,
        }
    }

    fn encode(&self, family: &Family, value: Value) -> Vec<u8> {
        let mut out = framing::single_object_header(family.current_fingerprint).to_vec();
        // The value is built from validated domain types by this module: a mismatch with the
        // embedded schema is a programming error that the round-trip tests catch.
        family
            .current()
            .writer()
            .write_value(&mut out, value)
            .unwrap_or_else(|e| panic!("{} value does not match its schema: {e}", family.kind));
        out
    }

    /// Reads the datum with the schema it was written with. No schema resolution: apache-avro
    /// resolves a union branch to the first reader branch whose fields fit, which confuses
    /// records with overlapping fields. Branches are mapped by the writer's own names instead,
    /// and fields by name (a field added later must have a default in the schema and the mapping).
    fn decode<'a>(
        &'a self,
        families: &[&'a Family],
        bytes: &[u8],
        confluent: &'a ConfluentWriters,
    ) -> Result<(Value, WriterRef<'a>, Kind), CodecError> {
        if bytes.len() > RECORD_LEN_MAX {
            return Err(CodecError::TooLarge(bytes.len()));
        }
        let expected = families[0].kind;
        let (framing, datum) = framing::split(bytes)?;
        let (writer, kind) = match framing {
            Framing::SingleObject { fingerprint } => families
                .iter()
                .find_map(|f| f.writer(fingerprint).map(|w| (WriterRef::Embedded(w), f.kind)))
                .ok_or(CodecError::UnknownFingerprint { kind: expected, fingerprint })?,
            Framing::Confluent { schema_id } => match confluent.get(&schema_id) {
                Some(c) if families.iter().any(|f| f.kind == c.kind()) => (WriterRef::Confluent(c), c.kind()),
                _ => return Err(CodecError::UnknownSchemaId(schema_id, expected)),
            },
        };
        let mut input = EofGuard { rest: datum, hit_end: false };
        let value = writer.reader().read_value(&mut input);
        // apache-avro reads a union index cut off by the end of the input as branch 0 (null):
        // a record truncated before a trailing optional field would decode "successfully".
        if input.hit_end {
            return Err(CodecError::Truncated("datum"));
        }
        let value = value?;
        if !input.rest.is_empty() {
            return Err(CodecError::Avro(format!("{} bytes after the datum", input.rest.len())));
        }
        Ok((value, writer, kind))
    }
}

/// A reader over a byte slice that remembers whether anyone asked to read past its end.
struct EofGuard<'a> {
    rest: &'a [u8],
    hit_end: bool,
}

impl std::io::Read for EofGuard<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !buf.is_empty() && self.rest.is_empty() {
            self.hit_end = true;
        }
        self.rest.read(buf)
    }
}

// ---- shared pieces -------------------------------------------------------------------------

fn posting_value(p: &Posting) -> Value {
    record(vec![
        ("source", string(p.source.as_str())),
        ("destination", string(p.destination.as_str())),
        ("asset", string(p.asset.to_string())),
        ("amount", amount(p.amount)),
    ])
}

fn posting_from(v: Value) -> Result<Posting, CodecError> {
    let mut f = Fields::of("postings", v)?;
    Ok(Posting {
        source: f.parse("source")?,
        destination: f.parse("destination")?,
        asset: f.asset("asset")?,
        amount: f.amount("amount")?,
    })
}

fn ledger(f: &mut Fields) -> Result<LedgerId, CodecError> {
    LedgerId::parse_ledger(f.string("ledger")?).map_err(|e| invalid("ledger", e))
}

fn limits(f: &mut Fields) -> Result<Vec<AssetLimit>, CodecError> {
    f.array("limits")?.into_iter().map(limit_from).collect()
}

fn postings_from(f: &mut Fields) -> Result<Vec<Posting>, CodecError> {
    f.array("postings")?.into_iter().map(posting_from).collect()
}

fn invalid(field: &'static str, e: impl std::fmt::Display) -> CodecError {
    CodecError::Invalid { field, why: e.to_string() }
}

fn limit_value(l: &AssetLimit) -> Value {
    record(vec![("asset", string(l.asset.to_string())), ("min_balance", optional(l.min_balance.map(amount)))])
}

fn limit_from(v: Value) -> Result<AssetLimit, CodecError> {
    let mut f = Fields::of("limits", v)?;
    let min_balance = f.optional("min_balance")?.map(|v| as_amount("min_balance", v)).transpose()?;
    Ok(AssetLimit { asset: f.asset("asset")?, min_balance })
}

fn request_value(r: &TxRequest) -> Value {
    match r {
        TxRequest::Transfer { postings, metadata, pending_timeout_ms } => Value::Union(
            0,
            Box::new(record(vec![
                ("postings", array(postings, posting_value)),
                ("metadata", map(metadata)),
                ("pending_timeout_ms", optional(pending_timeout_ms.map(long))),
            ])),
        ),
        TxRequest::Reversal { original, metadata } => Value::Union(
            1,
            Box::new(record(vec![("original", string(original.as_str())), ("metadata", map(metadata))])),
        ),
    }
}

fn request_from(v: Value) -> Result<TxRequest, CodecError> {
    match as_union("request", v)? {
        (0, mut f) => {
            let postings = postings_from(&mut f)?;
            let pending_timeout_ms = match f.optional("pending_timeout_ms")? {
                None => None,
                Some(v) => Some(u64::try_from(as_long("pending_timeout_ms", v)?).map_err(|_| {
                    CodecError::Invalid { field: "pending_timeout_ms", why: "must not be negative".into() }
                })?),
            };
            Ok(TxRequest::Transfer { postings, metadata: f.metadata("metadata")?, pending_timeout_ms })
        }
        (1, mut f) => {
            Ok(TxRequest::Reversal { original: f.parse("original")?, metadata: f.metadata("metadata")? })
        }
        (i, _) => Err(bad_branch("request", i)),
    }
}

fn ledger_account(ledger: &LedgerId, account: &AccountId) -> Vec<(&'static str, Value)> {
    vec![("ledger", string(ledger.as_str())), ("account", string(account.as_str()))]
}

/// The fields shared by the account records (open/update commands and events).
fn account_fields(
    ledger: &LedgerId,
    account: &AccountId,
    limits: &[AssetLimit],
    metadata: &Metadata,
) -> Vec<(&'static str, Value)> {
    with(
        ledger_account(ledger, account),
        vec![("limits", array(limits, limit_value)), ("metadata", map(metadata))],
    )
}

fn amounts_value(a: &[Amount]) -> Value {
    array(a, |x| amount(*x))
}

fn amounts_from(field: &'static str, items: Vec<Value>) -> Result<Vec<Amount>, CodecError> {
    items.into_iter().map(|v| as_amount(field, v)).collect()
}

/// A field added in event schema v3 as `["null", Reason]`: absent in earlier records.
fn optional_reason(f: &mut Fields, field: &'static str) -> Result<Option<Reason>, CodecError> {
    let Some(value) = f.optional_field(field)? else { return Ok(None) };
    match as_optional(field, value)? {
        None => Ok(None),
        Some(Value::Enum(_, symbol)) => Reason::from_code(&symbol)
            .map(Some)
            .ok_or_else(|| invalid(field, format!("unknown reason {symbol}"))),
        Some(other) => Err(invalid(field, format!("expected an enum, got {other:?}"))),
    }
}

fn reason_value(r: Reason) -> Value {
    let index = Reason::ALL.iter().position(|x| *x == r).expect("every reason is listed") as u32;
    Value::Enum(index, r.code().to_owned())
}

fn body(family: &Family, kind: &str, fields: Vec<(&str, Value)>) -> Value {
    Value::Union(family.body_index(kind), Box::new(record(fields)))
}

fn ledger_tx(ledger: &LedgerId, tx_id: &TxId) -> Vec<(&'static str, Value)> {
    vec![("ledger", string(ledger.as_str())), ("tx_id", string(tx_id.as_str()))]
}

fn with(
    mut base: Vec<(&'static str, Value)>,
    more: Vec<(&'static str, Value)>,
) -> Vec<(&'static str, Value)> {
    base.extend(more);
    base
}

fn body_from(writer: &Writer, v: Value) -> Result<(&str, Fields), CodecError> {
    let (index, fields) = as_union("body", v)?;
    let kind = writer.body_kinds.get(index as usize).ok_or_else(|| bad_branch("body", index))?;
    Ok((kind.as_str(), fields))
}

// ---- commands ------------------------------------------------------------------------------

fn command_value(family: &Family, c: &Command) -> Value {
    use CommandBody::*;
    let fields = match &c.body {
        DefineAsset { ledger, asset } => {
            vec![("ledger", string(ledger.as_str())), ("asset", string(asset.to_string()))]
        }
        OpenAccount { ledger, account, limits, metadata }
        | UpdateAccount { ledger, account, limits, metadata } => {
            account_fields(ledger, account, limits, metadata)
        }
        CloseAccount { ledger, account } => ledger_account(ledger, account),
        Transact { ledger, tx_id, request } => {
            with(ledger_tx(ledger, tx_id), vec![("request", request_value(request))])
        }
        CommitPending { ledger, tx_id, amounts } => {
            with(ledger_tx(ledger, tx_id), vec![("amounts", optional(amounts.as_deref().map(amounts_value)))])
        }
        VoidPending { ledger, tx_id } | ExpirePending { ledger, tx_id } => ledger_tx(ledger, tx_id),
        PutDocument { doc_type, key, value, expected_version } => vec![
            ("doc_type", string(doc_type.as_str())),
            ("key", string(key.as_str())),
            ("value", string(value.clone())),
            ("expected_version", optional(expected_version.map(long))),
        ],
        DeleteDocument { doc_type, key, expected_version } => vec![
            ("doc_type", string(doc_type.as_str())),
            ("key", string(key.as_str())),
            ("expected_version", optional(expected_version.map(long))),
        ],
    };
    record(vec![
        ("tenant", string(c.tenant.as_str())),
        ("command_id", string(c.command_id.as_str())),
        ("actor", string(c.actor.as_str())),
        ("body", body(family, c.body.kind(), fields)),
    ])
}

fn expected_version(f: &mut Fields) -> Result<Option<u64>, CodecError> {
    f.optional("expected_version")?
        .map(|v| {
            u64::try_from(as_long("expected_version", v)?).map_err(|_| CodecError::Invalid {
                field: "expected_version",
                why: "must not be negative".into(),
            })
        })
        .transpose()
}

fn command_from(writer: &Writer, v: Value) -> Result<Command, CodecError> {
    let mut f = Fields::of("command", v)?;
    let (tenant, command_id, actor) = (f.parse("tenant")?, f.parse("command_id")?, f.parse("actor")?);
    let (kind, mut b) = body_from(writer, f.take("body")?)?;
    let body = match kind {
        "DefineAsset" => CommandBody::DefineAsset { ledger: ledger(&mut b)?, asset: b.asset("asset")? },
        "OpenAccount" => CommandBody::OpenAccount {
            ledger: ledger(&mut b)?,
            account: b.parse("account")?,
            limits: limits(&mut b)?,
            metadata: b.metadata("metadata")?,
        },
        "UpdateAccount" => CommandBody::UpdateAccount {
            ledger: ledger(&mut b)?,
            account: b.parse("account")?,
            limits: limits(&mut b)?,
            metadata: b.metadata("metadata")?,
        },
        "CloseAccount" => CommandBody::CloseAccount { ledger: ledger(&mut b)?, account: b.parse("account")? },
        "Transact" => CommandBody::Transact {
            ledger: ledger(&mut b)?,
            tx_id: b.parse("tx_id")?,
            request: request_from(b.take("request")?)?,
        },
        "CommitPending" => CommandBody::CommitPending {
            ledger: ledger(&mut b)?,
            tx_id: b.parse("tx_id")?,
            amounts: b
                .optional("amounts")?
                .map(|v| match v {
                    Value::Array(items) => amounts_from("amounts", items),
                    _ => Err(CodecError::Invalid { field: "amounts", why: "expected an array".into() }),
                })
                .transpose()?,
        },
        "VoidPending" => CommandBody::VoidPending { ledger: ledger(&mut b)?, tx_id: b.parse("tx_id")? },
        "ExpirePending" => CommandBody::ExpirePending { ledger: ledger(&mut b)?, tx_id: b.parse("tx_id")? },
        "PutDocument" => CommandBody::PutDocument {
            doc_type: b.parse("doc_type")?,
            key: b.parse("key")?,
            value: b.string("value")?,
            expected_version: expected_version(&mut b)?,
        },
        "DeleteDocument" => CommandBody::DeleteDocument {
            doc_type: b.parse("doc_type")?,
            key: b.parse("key")?,
            expected_version: expected_version(&mut b)?,
        },
        other => {
            return Err(CodecError::Invalid { field: "body", why: format!("unknown command {other}") });
        }
    };
    Ok(Command { tenant, command_id, actor, body })
}

// ---- events --------------------------------------------------------------------------------

fn event_value(family: &Family, epoch: u64, command_offset: i64, e: &Event) -> Value {
    use EventBody::*;
    let fields = match &e.body {
        AssetDefined { ledger, asset } => {
            vec![("ledger", string(ledger.as_str())), ("asset", string(asset.to_string()))]
        }
        AccountOpened { ledger, account, limits, metadata }
        | AccountUpdated { ledger, account, limits, metadata } => {
            account_fields(ledger, account, limits, metadata)
        }
        AccountClosed { ledger, account } => ledger_account(ledger, account),
        TransactionPosted { ledger, tx_id, postings, metadata, reverses } => with(
            ledger_tx(ledger, tx_id),
            vec![
                ("postings", array(postings, posting_value)),
                ("metadata", map(metadata)),
                ("reverses", optional(reverses.as_ref().map(|t| string(t.as_str())))),
            ],
        ),
        TransactionPending { ledger, tx_id, postings, metadata, timeout_ms, expires_at_ms } => with(
            ledger_tx(ledger, tx_id),
            vec![
                ("postings", array(postings, posting_value)),
                ("metadata", map(metadata)),
                ("timeout_ms", long(*timeout_ms)),
                ("expires_at_ms", Value::TimestampMillis(*expires_at_ms)),
            ],
        ),
        TransactionFailed { ledger, tx_id, request, reason, detail } => with(
            ledger_tx(ledger, tx_id),
            vec![
                ("request", request_value(request)),
                ("reason", reason_value(*reason)),
                ("detail", string(detail.clone())),
            ],
        ),
        TransactionDeduplicated { ledger, tx_id, first_rejection } => with(
            ledger_tx(ledger, tx_id),
            vec![("first_rejection", optional(first_rejection.map(reason_value)))],
        ),
        PendingVoided { ledger, tx_id } | PendingExpired { ledger, tx_id } => ledger_tx(ledger, tx_id),
        CommandDeduplicated { first_version, first_offset } => {
            vec![("first_version", long(*first_version)), ("first_offset", Value::Long(*first_offset))]
        }
        PendingCommitted { ledger, tx_id, amounts } => {
            with(ledger_tx(ledger, tx_id), vec![("amounts", amounts_value(amounts))])
        }
        DocumentPut { doc_type, key, value, version } => vec![
            ("doc_type", string(doc_type.as_str())),
            ("key", string(key.as_str())),
            ("value", string(value.clone())),
            ("version", long(*version)),
        ],
        DocumentDeleted { doc_type, key, version } => {
            vec![
                ("doc_type", string(doc_type.as_str())),
                ("key", string(key.as_str())),
                ("version", long(*version)),
            ]
        }
        CommandRejected { command, reason, detail, conflicts_with } => vec![
            ("command", string(command.clone())),
            ("reason", reason_value(*reason)),
            ("detail", string(detail.clone())),
            ("conflicts_with", optional(conflicts_with.map(long))),
        ],
    };
    record(vec![
        ("event_id", string(e.event_id())),
        ("tenant", string(e.tenant.as_str())),
        ("stream", string(e.stream.to_string())),
        ("stream_version", long(e.stream_version)),
        ("epoch", long(epoch)),
        ("command_offset", Value::Long(command_offset)),
        ("command_id", string(e.command_id.as_str())),
        ("command_fingerprint", Value::Bytes(e.command_fingerprint.to_le_bytes().to_vec())),
        ("actor", string(e.actor.as_str())),
        ("time_ms", Value::TimestampMillis(e.time_ms)),
        ("body", body(family, e.body.kind(), fields)),
    ])
}

fn stream_from(s: &str) -> Result<StreamId, CodecError> {
    let invalid = |why: String| CodecError::Invalid { field: "stream", why };
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [ledger] => LedgerId::parse_ledger(*ledger).map(StreamId::Ledger).map_err(|e| invalid(e.to_string())),
        [prefix, doc_type, key] if *prefix == STATE_STREAM_PREFIX => Ok(StreamId::Document(
            DocType::parse(*doc_type).map_err(|e| invalid(e.to_string()))?,
            DocKey::parse(*key).map_err(|e| invalid(e.to_string()))?,
        )),
        _ => Err(invalid(format!("{s:?} is neither LEDGER nor state/TYPE/KEY"))),
    }
}

fn event_from(writer: &Writer, v: Value) -> Result<LogRecord, CodecError> {
    let mut f = Fields::of("event", v)?;
    // Added in event schema v2; v1 records carry neither (readers treat them as unclaimed).
    let epoch = f.optional_field("epoch")?.map(|v| as_long("epoch", v)).transpose()?.unwrap_or(0);
    let epoch = u64::try_from(epoch).map_err(|_| invalid("epoch", "must not be negative"))?;
    let command_offset =
        f.optional_field("command_offset")?.map(|v| as_long("command_offset", v)).transpose()?.unwrap_or(-1);
    let tenant = f.parse("tenant")?;
    let stream = stream_from(&f.string("stream")?)?;
    let (stream_version, command_id) = (f.unsigned("stream_version")?, f.parse("command_id")?);
    // Added in event schema v3; earlier events have none (0: not kept for repeats).
    let command_fingerprint = match f.optional_field("command_fingerprint")? {
        None => 0,
        Some(Value::Bytes(b)) if b.is_empty() => 0,
        Some(Value::Bytes(b)) => u128::from_le_bytes(
            b.as_slice().try_into().map_err(|_| invalid("command_fingerprint", "must be 16 bytes"))?,
        ),
        Some(other) => return Err(invalid("command_fingerprint", format!("expected bytes, got {other:?}"))),
    };
    let (actor, time_ms) = (f.parse("actor")?, f.long("time_ms")?);
    let (kind, mut b) = body_from(writer, f.take("body")?)?;
    let body = match kind {
        "AssetDefined" => EventBody::AssetDefined { ledger: ledger(&mut b)?, asset: b.asset("asset")? },
        "AccountOpened" => EventBody::AccountOpened {
            ledger: ledger(&mut b)?,
            account: b.parse("account")?,
            limits: limits(&mut b)?,
            metadata: b.metadata("metadata")?,
        },
        "AccountUpdated" => EventBody::AccountUpdated {
            ledger: ledger(&mut b)?,
            account: b.parse("account")?,
            limits: limits(&mut b)?,
            metadata: b.metadata("metadata")?,
        },
        "AccountClosed" => EventBody::AccountClosed { ledger: ledger(&mut b)?, account: b.parse("account")? },
        "TransactionPosted" => EventBody::TransactionPosted {
            ledger: ledger(&mut b)?,
            tx_id: b.parse("tx_id")?,
            postings: postings_from(&mut b)?,
            metadata: b.metadata("metadata")?,
            reverses: b
                .optional("reverses")?
                .map(|v| TxId::parse(as_string("reverses", v)?).map_err(|e| invalid("reverses", e)))
                .transpose()?,
        },
        "TransactionPending" => EventBody::TransactionPending {
            ledger: ledger(&mut b)?,
            tx_id: b.parse("tx_id")?,
            postings: postings_from(&mut b)?,
            metadata: b.metadata("metadata")?,
            timeout_ms: b.unsigned("timeout_ms")?,
            expires_at_ms: b.long("expires_at_ms")?,
        },
        "TransactionFailed" => EventBody::TransactionFailed {
            ledger: ledger(&mut b)?,
            tx_id: b.parse("tx_id")?,
            request: request_from(b.take("request")?)?,
            reason: b.reason("reason")?,
            detail: b.string("detail")?,
        },
        "TransactionDeduplicated" => EventBody::TransactionDeduplicated {
            ledger: ledger(&mut b)?,
            tx_id: b.parse("tx_id")?,
            first_rejection: optional_reason(&mut b, "first_rejection")?,
        },
        "CommandDeduplicated" => EventBody::CommandDeduplicated {
            first_version: b.unsigned("first_version")?,
            first_offset: b.long("first_offset")?,
        },
        "PendingCommitted" => EventBody::PendingCommitted {
            ledger: ledger(&mut b)?,
            tx_id: b.parse("tx_id")?,
            amounts: amounts_from("amounts", b.array("amounts")?)?,
        },
        "PendingVoided" => EventBody::PendingVoided { ledger: ledger(&mut b)?, tx_id: b.parse("tx_id")? },
        "PendingExpired" => EventBody::PendingExpired { ledger: ledger(&mut b)?, tx_id: b.parse("tx_id")? },
        "DocumentPut" => EventBody::DocumentPut {
            doc_type: b.parse("doc_type")?,
            key: b.parse("key")?,
            value: b.string("value")?,
            version: b.unsigned("version")?,
        },
        "DocumentDeleted" => EventBody::DocumentDeleted {
            doc_type: b.parse("doc_type")?,
            key: b.parse("key")?,
            version: b.unsigned("version")?,
        },
        "CommandRejected" => EventBody::CommandRejected {
            command: b.string("command")?,
            reason: b.reason("reason")?,
            detail: b.string("detail")?,
            conflicts_with: match b
                .optional_field("conflicts_with")?
                .map(|v| as_optional("conflicts_with", v))
            {
                Some(Ok(Some(v))) => Some(
                    u64::try_from(as_long("conflicts_with", v)?)
                        .map_err(|_| invalid("conflicts_with", "must not be negative"))?,
                ),
                Some(Err(e)) => return Err(e),
                _ => None,
            },
        },
        other => {
            return Err(CodecError::Invalid { field: "body", why: format!("unknown event {other}") });
        }
    };
    let event =
        Event { tenant, stream, stream_version, command_id, command_fingerprint, actor, time_ms, body };
    Ok(LogRecord::Event { epoch, command_offset, event })
}
