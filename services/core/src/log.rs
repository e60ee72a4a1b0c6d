//! Reading the events log: which records count.
//!
//! Exactly-once must not rest on broker transactions (DESIGN.md section 2). Instead, each
//! partition of the events topic is written by one owner at a time:
//! - a new owner first appends a [`LogRecord::Claim`] with an epoch higher than any before, then
//!   restores state up to its own claim;
//! - every event it writes carries its epoch and the offset of the command it answers;
//! - every reader (processor restore, outcome watcher, projector) folds the partition in offset
//!   order through a [`LogReader`], which ignores records written under a superseded epoch (a
//!   zombie's late writes) and events for commands already answered.
//!
//! The next owner resumes the `commands` partition at [`LogReader::next_command_offset`], so no
//! command is answered twice and none is skipped. A command record that cannot be processed at
//! all (undecodable, unknown schema, key not matching its body) is answered by a
//! [`LogRecord::DeadLettered`] marker instead of an event, after the record went to the
//! dead-letter topic, so the log still answers every command offset exactly once.
//!
//! Two owners may claim at once with the same epoch (a group split for a moment). The first claim
//! of an epoch wins; a later one reads as [`Verdict::Invalid`]. An owner restores up to its own
//! claim before writing anything, and if its claim did not read as [`Verdict::NewEpoch`] it has
//! lost and must claim again.
//!
//! The protocol is model-checked in `services/core/tests/log.rs`: random interleavings of
//! take-overs (from stale views too), zombies and skewed clocks, read back through this reader.

use crate::Event;

/// One record of an events partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every record is an event; boxing it would add an allocation per command for the rare claims and markers"
)]
pub enum LogRecord {
    /// An owner takes the partition over from `epoch - 1` and earlier.
    Claim { epoch: u64, owner: String },
    /// The one event for the command at `command_offset`, written by the owner of `epoch`.
    Event { epoch: u64, command_offset: i64, event: Event },
    /// The command record at `command_offset` was sent to the dead-letter topic for `reason`.
    DeadLettered { epoch: u64, command_offset: i64, reason: String },
}

impl LogRecord {
    /// The epoch of the owner that wrote this record.
    pub fn epoch(&self) -> u64 {
        match *self {
            LogRecord::Claim { epoch, .. }
            | LogRecord::Event { epoch, .. }
            | LogRecord::DeadLettered { epoch, .. } => epoch,
        }
    }
}

/// What a reader does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A claim with a higher epoch: later writes of older epochs are ignored.
    NewEpoch,
    /// An answer that counts: fold the event (a dead-letter marker only advances the position).
    Apply,
    /// Written by an owner that had already been superseded (a zombie).
    Superseded,
    /// An event for a command that is already answered in the log.
    AlreadyAnswered,
    /// A claim that does not raise the epoch, or an event of an epoch never claimed: no correct
    /// writer produces these; ignored (and worth a warning).
    Invalid,
}

/// The position of a reader in one events partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogReader {
    epoch: u64,
    next_command_offset: i64,
}

impl LogReader {
    /// A reader at the start of the partition: epoch 0, no command answered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resumes from a snapshot that covered the log up to some offset.
    pub fn resume(epoch: u64, next_command_offset: i64) -> Self {
        LogReader { epoch, next_command_offset }
    }

    /// The epoch of the latest claim read; a new owner claims `epoch() + 1`.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The first command offset not answered in the log read so far.
    pub fn next_command_offset(&self) -> i64 {
        self.next_command_offset
    }

    /// Reads the next record (in offset order) and says whether it counts.
    pub fn read(&mut self, record: &LogRecord) -> Verdict {
        match *record {
            LogRecord::Claim { epoch, .. } if epoch > self.epoch => {
                self.epoch = epoch;
                Verdict::NewEpoch
            }
            LogRecord::Claim { .. } => Verdict::Invalid,
            LogRecord::Event { epoch, command_offset, .. }
            | LogRecord::DeadLettered { epoch, command_offset, .. } => self.answer(epoch, command_offset),
        }
    }

    fn answer(&mut self, epoch: u64, command_offset: i64) -> Verdict {
        if epoch < self.epoch {
            Verdict::Superseded
        } else if epoch > self.epoch {
            Verdict::Invalid
        } else if command_offset < self.next_command_offset {
            Verdict::AlreadyAnswered
        } else {
            self.next_command_offset = command_offset + 1;
            Verdict::Apply
        }
    }
}

/// The state of one events partition as its readers fold it: the reader's position and the
/// state of every stream in the partition. The processor restores one of these before it
/// writes; projections and tests fold the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Replica {
    /// Where the reader is: the latest claim's epoch and the next command offset to answer.
    pub reader: LogReader,
    /// The fold of every event that counted, in offset order.
    pub state: crate::State,
}

impl Replica {
    /// The replica of an empty partition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the next record of the partition, at `offset`, folding it into the state if it
    /// counts.
    pub fn read(&mut self, offset: i64, record: &LogRecord) -> Verdict {
        let verdict = self.read_unplaced(record);
        if verdict == Verdict::Apply {
            self.place(record, offset);
        }
        verdict
    }

    /// [`Replica::read`] for a writer that folds its own record before appending it, when its
    /// offset is not known yet: the answer's place stays [`crate::CommandRecord::UNPLACED`]
    /// until [`Replica::place`] is called with it. Until then a repeat of that command cannot
    /// be answered (it would not know where the first answer is).
    pub fn read_unplaced(&mut self, record: &LogRecord) -> Verdict {
        let verdict = self.reader.read(record);
        if let (Verdict::Apply, LogRecord::Event { event, .. }) = (verdict, record) {
            crate::apply(&mut self.state, event);
        }
        verdict
    }

    /// Records that `record`, read before, is at `offset`: where a repeat of its command finds
    /// the first answer. Does nothing for records that are not a command id's first answer.
    pub fn place(&mut self, record: &LogRecord, offset: i64) {
        if let LogRecord::Event { event, .. } = record {
            self.state.place_command(
                &event.tenant,
                &event.stream,
                &event.command_id,
                event.stream_version,
                offset,
            );
        }
    }
}
