//! Reading one partition of the `events` log into a [`Replica`].

use crate::KafkaError;
use crate::config::KafkaOptions;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use tally_codec::Codec;
use tally_core::log::{LogRecord, Replica, Verdict};

/// How long a read may go without receiving anything before it is an error.
const STALL_MAX: Duration = Duration::from_secs(30);

/// A reader positioned in one events partition. librdkafka's consumer blocks, so every method
/// here runs on tokio's blocking pool (see [`LogTail::read_until`]).
pub struct LogTail {
    consumer: BaseConsumer,
    topic: String,
    partition: i32,
    /// The offset of the next record to read.
    position: i64,
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
        let consumer: BaseConsumer = kafka.reader("restore").create()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
        consumer.assign(&tpl)?;
        Ok(LogTail { consumer, topic: topic.to_owned(), partition, position: from, read: 0 })
    }

    /// The offset of the next record to read.
    pub fn position(&self) -> i64 {
        self.position
    }

    /// Records read since opening.
    pub fn records_read(&self) -> u64 {
        self.read
    }

    /// The partition's high watermark: one past the last record, on Apache Kafka. Only a hint:
    /// the embedded broker (nisshi 0.7.0-pre.2) advances it by one per produced batch rather
    /// than per record, so it can be short of the last record. Restore does not depend on it:
    /// an owner reads on to its own claim, whose offset the broker's acknowledgement gives.
    pub fn end(&self) -> Result<i64, KafkaError> {
        let (_, high) =
            self.consumer.fetch_watermarks(&self.topic, self.partition, Duration::from_secs(15))?;
        Ok(high)
    }

    /// Folds every record before offset `end` into `replica`; returns the offset of and the
    /// verdict on the last record read (none if there was nothing to read).
    pub fn read_until(
        &mut self,
        codec: &Codec,
        replica: &mut Replica,
        end: i64,
    ) -> Result<Option<(i64, Verdict)>, KafkaError> {
        let mut last = None;
        self.for_each_until(codec, end, |offset, record| {
            let verdict = replica.read(offset, &record);
            last = Some((offset, verdict));
            verdict
        })?;
        Ok(last)
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
        let mut last_progress = Instant::now();
        while self.position < end {
            let Some(result) = self.consumer.poll(Duration::from_millis(20)) else {
                if idle.is_some_and(|idle| last_progress.elapsed() > idle) {
                    return Ok(());
                }
                if last_progress.elapsed() > STALL_MAX {
                    return Err(KafkaError::Stalled(format!(
                        "{}/{}: no record for {STALL_MAX:?} at offset {} (end {end})",
                        self.topic, self.partition, self.position
                    )));
                }
                continue;
            };
            let message = result?;
            last_progress = Instant::now();
            let offset = message.offset();
            self.position = offset + 1;
            self.read += 1;
            let record = match codec.decode_log_record(message.payload().unwrap_or_default()) {
                Ok(record) => record,
                Err(e) => {
                    // Only Tally writes here; an unreadable record is skipped by every reader alike.
                    tracing::warn!(partition = self.partition, offset, "unreadable log record: {e}");
                    continue;
                }
            };
            if f(offset, record) == Verdict::Invalid {
                tracing::warn!(partition = self.partition, offset, "invalid log record ignored");
            }
        }
        Ok(())
    }
}
