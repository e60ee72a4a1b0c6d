//! Reading topics: [`TopicReader`] delivers raw [`Record`]s of chosen partitions;
//! [`LogTail`] reads the `events` log with it, decoding each record and following each
//! partition's position (into a [`Replica`], or record by record).

use crate::KafkaError;
use crate::config::KafkaOptions;
use crate::record::Record;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tally_codec::Codec;
use tally_core::log::{LogRecord, Replica, Verdict};
use tally_core::memory;
use tally_core::projection::RowKey;

/// How long a read may go without receiving anything before it is an error.
const STALL_MAX: Duration = Duration::from_secs(30);
/// How long a watermark or metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a partition's reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest record the broker still has.
    Beginning,
    /// This offset.
    At(i64),
}

/// A reader of chosen partitions of one topic, outside any consumer group (nothing is
/// committed). librdkafka's consumer blocks: call it from a thread of its own or tokio's
/// blocking pool.
pub struct TopicReader {
    consumer: BaseConsumer,
    topic: String,
}

impl TopicReader {
    /// A reader of `topic` (`role` names the client in logs) that reads nothing until
    /// [`TopicReader::assign`].
    pub fn open(kafka: &KafkaOptions, role: &str, topic: &str) -> Result<TopicReader, KafkaError> {
        Ok(TopicReader { consumer: kafka.reader(role).create()?, topic: topic.to_owned() })
    }

    /// Reads exactly these partitions from now on, each from its start.
    pub fn assign(&self, starts: &[(i32, Start)]) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (partition, start) in starts {
            let offset = match start {
                Start::Beginning => Offset::Beginning,
                Start::At(offset) => Offset::Offset(*offset),
            };
            tpl.add_partition_offset(&self.topic, *partition, offset)?;
        }
        Ok(self.consumer.assign(&tpl)?)
    }

    /// How many partitions the topic has (0: it does not exist).
    pub fn partition_count(&self) -> Result<i32, KafkaError> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)?;
        Ok(metadata.topics().first().map_or(0, |t| t.partitions().len() as i32))
    }

    /// A partition's oldest offset and its high watermark (one past the last record on Apache
    /// Kafka; see [`LogTail::end`] for the embedded broker's).
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), KafkaError> {
        Ok(self.consumer.fetch_watermarks(&self.topic, partition, METADATA_TIMEOUT)?)
    }

    /// The next record of any assigned partition, waiting up to `wait` (`None`: none came).
    pub fn poll(&self, wait: Duration) -> Result<Option<Record>, KafkaError> {
        match self.consumer.poll(wait) {
            None => Ok(None),
            Some(Ok(message)) => Ok(Some(Record::of(&message))),
            Some(Err(e)) => Err(e.into()),
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// One record of the log as read: where it is, and the record (`None`: unreadable, skipped
/// by every reader alike).
#[derive(Debug)]
pub struct LogRead {
    pub partition: i32,
    pub offset: i64,
    pub record: Option<LogRecord>,
    /// The record's timestamp: milliseconds since the Unix epoch when its producer sent it.
    pub timestamp_ms: Option<i64>,
}

/// A reader positioned in partitions of the `events` log. librdkafka's consumer blocks, so
/// every method here runs on a thread of its own or tokio's blocking pool.
pub struct LogTail {
    reader: TopicReader,
    /// The offset of the next record to read, per partition read.
    positions: BTreeMap<i32, i64>,
    /// Records read so far.
    read: u64,
}

impl LogTail {
    /// Opens a reader at the start of `topic`/`partition`.
    pub fn open(kafka: &KafkaOptions, topic: &str, partition: i32) -> Result<Self, KafkaError> {
        Self::open_at(kafka, topic, partition, 0)
    }

    /// Opens a reader at offset `from` of `topic`/`partition`.
    pub fn open_at(kafka: &KafkaOptions, topic: &str, partition: i32, from: i64) -> Result<Self, KafkaError> {
        Self::open_partitions(kafka, "restore", topic, &[(partition, from)])
    }

    /// Opens a reader of several partitions of `topic`, each at its offset (`role` names the
    /// client in logs).
    pub fn open_partitions(
        kafka: &KafkaOptions,
        role: &str,
        topic: &str,
        starts: &[(i32, i64)],
    ) -> Result<Self, KafkaError> {
        let mut tail =
            LogTail { reader: TopicReader::open(kafka, role, topic)?, positions: BTreeMap::new(), read: 0 };
        tail.assign(starts)?;
        Ok(tail)
    }

    /// Reads exactly these partitions from now on, each from its offset.
    pub fn assign(&mut self, starts: &[(i32, i64)]) -> Result<(), KafkaError> {
        let at: Vec<(i32, Start)> = starts.iter().map(|(p, from)| (*p, Start::At(*from))).collect();
        self.reader.assign(&at)?;
        self.positions = starts.iter().copied().collect();
        Ok(())
    }

    /// The one partition this reader reads (the single-partition methods below need one).
    fn partition(&self) -> i32 {
        debug_assert_eq!(self.positions.len(), 1, "a single-partition read of several partitions");
        self.positions.keys().next().copied().unwrap_or_default()
    }

    /// The offset of the next record to read (of the one partition read).
    pub fn position(&self) -> i64 {
        self.positions.values().next().copied().unwrap_or_default()
    }

    /// The offset of the next record to read, per partition.
    pub fn positions(&self) -> &BTreeMap<i32, i64> {
        &self.positions
    }

    /// Records read since opening.
    pub fn records_read(&self) -> u64 {
        self.read
    }

    /// The high watermark of the one partition read: one past the last record, on Apache
    /// Kafka. Only a hint: the embedded broker (nisshi 0.7.0-pre.2) advances it by one per
    /// produced batch rather than per record, so it can be short of the last record. Restore
    /// does not depend on it: an owner reads on to its own claim, whose offset the broker's
    /// acknowledgement gives.
    pub fn end(&self) -> Result<i64, KafkaError> {
        self.end_of(self.partition())
    }

    /// The high watermark of `partition` (a hint, as [`LogTail::end`]).
    pub fn end_of(&self, partition: i32) -> Result<i64, KafkaError> {
        Ok(self.reader.watermarks(partition)?.1)
    }

    /// The next record of any partition read, waiting up to `wait` (`None`: none came).
    pub fn next(&mut self, codec: &Codec, wait: Duration) -> Result<Option<LogRead>, KafkaError> {
        let Some(record) = self.reader.poll(wait)? else { return Ok(None) };
        let (partition, offset, timestamp_ms) = (record.partition, record.offset, record.timestamp_ms);
        self.positions.insert(partition, offset + 1);
        self.read += 1;
        let record = match codec.decode_log_record(&record.payload) {
            Ok(record) => Some(record),
            Err(e) => {
                // Only Tally writes here; an unreadable record is skipped by every reader alike.
                tracing::warn!(partition, offset, "unreadable log record: {e}");
                None
            }
        };
        Ok(Some(LogRead { partition, offset, record, timestamp_ms }))
    }

    /// Folds every record before offset `end` into `replica`; returns the offset of and the
    /// verdict on the last record read (none if there was nothing to read). Before a record
    /// whose event names transactions the replica lacks (it was restored from a snapshot of a
    /// state that forgot them, `tally_core::memory`), `recall` is given their keys to put them
    /// back; if it fails, nothing more is folded and its error is returned (the inner `Err`).
    pub fn read_until<E>(
        &mut self,
        codec: &Codec,
        replica: &mut Replica,
        end: i64,
        mut recall: impl FnMut(&mut Replica, Vec<RowKey>) -> Result<(), E>,
    ) -> Result<Result<Option<(i64, Verdict)>, E>, KafkaError> {
        let (mut last, mut failed) = (None, None);
        self.for_each_until(codec, end, |offset, record| {
            if failed.is_some() {
                return Verdict::Superseded; // read to the end unfolded; the error is returned
            }
            let wanted = memory::keys_named_by_events(&replica.state, [&record]);
            if !wanted.is_empty()
                && let Err(e) = recall(replica, wanted)
            {
                failed = Some(e);
                return Verdict::Superseded;
            }
            let verdict = replica.read(offset, &record);
            last = Some((offset, verdict));
            verdict
        })?;
        Ok(failed.map_or(Ok(last), Err))
    }

    /// Reads every record before offset `end`, in order, giving each to `f` (which says how
    /// it was judged, for the warning on invalid records).
    pub fn for_each_until(
        &mut self,
        codec: &Codec,
        end: i64,
        f: impl FnMut(i64, LogRecord) -> Verdict,
    ) -> Result<(), KafkaError> {
        self.read(codec, end, None, f)
    }

    /// Reads up to the high watermark, then on until no record arrives for `idle` (for tools
    /// and tests that read "everything there is": the watermark can be short, see [`Self::end`]).
    pub fn for_each_available(
        &mut self,
        codec: &Codec,
        idle: Duration,
        mut f: impl FnMut(i64, LogRecord) -> Verdict,
    ) -> Result<(), KafkaError> {
        let hint = self.end()?;
        self.read(codec, hint, None, &mut f)?;
        self.read(codec, i64::MAX, Some(idle), f)
    }

    fn read(
        &mut self,
        codec: &Codec,
        end: i64,
        idle: Option<Duration>,
        mut f: impl FnMut(i64, LogRecord) -> Verdict,
    ) -> Result<(), KafkaError> {
        let partition = self.partition();
        let mut last_progress = Instant::now();
        while self.position() < end {
            let Some(read) = self.next(codec, Duration::from_millis(20))? else {
                if idle.is_some_and(|idle| last_progress.elapsed() > idle) {
                    return Ok(());
                }
                if last_progress.elapsed() > STALL_MAX {
                    return Err(KafkaError::Stalled(format!(
                        "{}/{partition}: no record for {STALL_MAX:?} at offset {} (end {end})",
                        self.reader.topic(),
                        self.position()
                    )));
                }
                continue;
            };
            last_progress = Instant::now();
            let Some(record) = read.record else { continue };
            if f(read.offset, record) == Verdict::Invalid {
                tracing::warn!(partition, offset = read.offset, "invalid log record ignored");
            }
        }
        Ok(())
    }
}
