//! The persistent log: append records, persist them as a group, read by slot, truncate a suffix,
//! discard a prefix, recover after a restart.
//!
//! Appends are staged in memory and reach the medium on `sync` (one write + one persist for the
//! whole group: group commit). `durable_lsn` only ever moves when a persist succeeded; after any
//! I/O error the log is failed for good and reports no durability again (a failed fdatasync may
//! have dropped dirty pages, so retrying it would lie).

use crate::error::{Error, Result};
use crate::medium::{BackendKind, Medium};
use crate::payloads::Payloads;
use crate::record::{decode, encode_into, encoded_size_bytes, Decoded, Header, Kind, HEADER_SIZE_BYTES, MAX_PAYLOAD_BYTES};
use crate::recovery::recover;
use crate::ring::{implicit_wrap, lap_remaining_bytes, medium_offset, record_start_lsn};
use crate::state::{HardState, LogState};
use crate::superblock::{Superblock, DATA_OFFSET_BYTES};
use decree_engine::core::io::DurableWrite;
use decree_engine::types::{Ballot, Entry, Slot, Value};

/// Ring bytes ordinary appends leave free so `discard_prefix` (three header-only records plus
/// at most one wrap gap) can always run, even on a full log.
const DISCARD_RESERVE_BYTES: u64 = 4 * HEADER_SIZE_BYTES as u64;

/// One entry read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its slot.
    pub slot: Slot,
    /// The ballot it was accepted at.
    pub ballot: Ballot,
    /// The value bytes as the driver serialized them.
    pub payload: Vec<u8>,
}

/// A record-structured log on a `Medium`.
pub struct Log<M: Medium> {
    medium: M,
    sb: Superblock,
    state: LogState,
    /// Next append position (staged records included).
    tail_lsn: u64,
    /// Staged bytes before this position are on the medium.
    written_lsn: u64,
    /// Everything before this position is durable.
    durable_lsn: u64,
    /// Encoded records for `written_lsn..tail_lsn`.
    staging: Vec<u8>,
    /// Scratch for the values of the batch being staged, kept so staging allocates nothing.
    payloads: Payloads,
    /// The first I/O error; once set, the log refuses everything.
    failed: Option<String>,
}

impl<M: Medium> Log<M> {
    /// Formats `medium` as an empty log whose ring fills the medium past the superblock.
    pub fn create(mut medium: M) -> Result<Log<M>> {
        let size = medium.size_bytes();
        let capacity_bytes = size.saturating_sub(DATA_OFFSET_BYTES) / 8 * 8;
        if capacity_bytes < 4 * HEADER_SIZE_BYTES as u64 {
            return Err(Error::Invalid {
                resource: medium.resource().to_string(),
                detail: format!("medium of {size} bytes is too small for a log"),
            });
        }
        let resource = medium.resource().to_string();
        let io = |op| {
            let resource = resource.clone();
            move |source| Error::Io { resource, op, source }
        };
        // Erase both superblock copies first so an older format's copy cannot outrank ours.
        medium.write_at(0, &[0u8; DATA_OFFSET_BYTES as usize]).map_err(io("erase superblock"))?;
        medium.persist().map_err(io("persist"))?;
        let sb = Superblock { log_id: fastrand::u64(1..), generation: 1, capacity_bytes, head_lsn: 0, epoch: 1, epoch_start_lsn: 0 };
        sb.store(&mut medium).map_err(io("write superblock"))?;
        tracing::info!(resource = medium.resource(), capacity_bytes, log_id = sb.log_id, "pmem log created");
        Ok(Log::assemble(medium, sb, LogState::default(), 0))
    }

    /// Recovers the log on `medium`: the longest valid prefix, torn tail cut.
    pub fn open(mut medium: M) -> Result<Log<M>> {
        let old = Superblock::load(&medium)?;
        let found = recover(&medium, &old)?;
        // A new incarnation starts at the recovered end, durably, before any append: whatever
        // torn bytes lie past it can never validate again (see record.rs on `epoch`).
        let sb = Superblock { generation: old.generation + 1, epoch: old.epoch + 1, epoch_start_lsn: found.end_lsn, ..old };
        sb.store(&mut medium).map_err(|source| Error::Io {
            resource: medium.resource().to_string(),
            op: "write superblock",
            source,
        })?;
        tracing::info!(
            resource = medium.resource(),
            records = found.record_count,
            head_lsn = sb.head_lsn,
            end_lsn = found.end_lsn,
            slots = found.state.entries.len(),
            stop = found.stop_reason.as_deref().unwrap_or("ring full"),
            "pmem log recovered"
        );
        Ok(Log::assemble(medium, sb, found.state, found.end_lsn))
    }

    fn assemble(medium: M, sb: Superblock, state: LogState, end_lsn: u64) -> Log<M> {
        Log {
            medium,
            sb,
            state,
            tail_lsn: end_lsn,
            written_lsn: end_lsn,
            durable_lsn: end_lsn,
            staging: Vec::new(),
            payloads: Payloads::default(),
            failed: None,
        }
    }

    /// Stages an accepted entry; durable after the next successful `sync`.
    pub fn append_entry(&mut self, slot: Slot, ballot: Ballot, payload: &[u8]) -> Result<u64> {
        if slot < self.state.base {
            return Err(self.invalid(format!("slot {slot} is below the discarded prefix {}", self.state.base)));
        }
        self.append(Kind::Entry, slot, ballot, payload)
    }

    /// Stages a promise of `ballot`.
    pub fn append_promise(&mut self, ballot: Ballot) -> Result<u64> {
        self.append(Kind::Promise, 0, ballot, &[])
    }

    /// Stages "every slot below `commit` is chosen".
    pub fn append_commit(&mut self, commit: Slot) -> Result<u64> {
        self.append(Kind::Commit, commit, Ballot::ZERO, &[])
    }

    /// Stages one of the core's durable writes, serializing values with `encode_value` (which
    /// appends one value's bytes to the buffer it is given, leaving the bytes already there alone);
    /// returns the position the write ends at (report its ticket once `durable_lsn() >=` it).
    pub fn stage(&mut self, write: &DurableWrite, encode_value: &mut dyn FnMut(&Value, &mut Vec<u8>)) -> Result<u64> {
        match write {
            DurableWrite::Promise(ballot) => self.append_promise(*ballot),
            DurableWrite::Commit(slot) => self.append_commit(*slot),
            DurableWrite::Checkpoint(checkpoint) => {
                // The checkpoint's bytes are the driver's to store durably beside the log before
                // it stages this write; the log drops the entries the checkpoint covers.
                self.discard_prefix(checkpoint.slot)?;
                Ok(self.tail_lsn)
            }
            DurableWrite::Entries(entries) => {
                // Taken out of `self` while `stage_entries` appends through `&mut self`.
                let mut payloads = std::mem::take(&mut self.payloads);
                payloads.fill(entries.iter().map(|e| &e.value), encode_value);
                let staged = self.stage_entries(entries, &payloads);
                payloads.clear();
                self.payloads = payloads;
                staged
            }
        }
    }

    /// Stages `entries` with their encoded `payloads`: check room for all, then stage, so a
    /// batch is staged whole or not at all.
    fn stage_entries(&mut self, entries: &[Entry], payloads: &Payloads) -> Result<u64> {
        let sizes = payloads.iter().map(|p| encoded_size_bytes(p.len()) as u64);
        // Worst case: one wrap gap, shorter than the largest record.
        let needed = sizes.clone().sum::<u64>() + sizes.max().unwrap_or(0);
        if needed + DISCARD_RESERVE_BYTES > self.free_bytes() {
            return Err(self.full(needed));
        }
        if let Some(low) = entries.iter().find(|e| e.slot < self.state.base) {
            return Err(self.invalid(format!("slot {} is below the discarded prefix {}", low.slot, self.state.base)));
        }
        let mut end = self.tail_lsn;
        for (entry, payload) in entries.iter().zip(payloads.iter()) {
            end = self.append_entry(entry.slot, entry.ballot, payload)?;
        }
        Ok(end)
    }

    /// The live state as the core's durable writes (promise, entries, commit), values decoded by
    /// `decode_value`, to rebuild the core's recovered state after a restart.
    pub fn recovered_writes(&self, decode_value: &mut dyn FnMut(Slot, &[u8]) -> Option<Value>) -> Result<Vec<DurableWrite>> {
        let mut entries = Vec::with_capacity(self.state.entries.len());
        for slot in self.state.entries.slots() {
            let stored = self.read(slot)?.expect("listed slot has an entry");
            let value = decode_value(slot, &stored.payload).ok_or_else(|| {
                let loc = self.state.entries.get(slot).expect("listed slot has a location");
                Error::Corrupt {
                    resource: self.medium.resource().to_string(),
                    offset: medium_offset(loc.lsn, self.sb.capacity_bytes),
                    lsn: loc.lsn,
                    detail: format!("slot {slot}: checksummed payload does not decode as a value"),
                }
            })?;
            entries.push(Entry { slot, ballot: stored.ballot, value });
        }
        let hard = self.state.hard;
        Ok(vec![DurableWrite::Promise(hard.promise), DurableWrite::Entries(entries.into()), DurableWrite::Commit(hard.commit)])
    }

    /// Forgets entries at `from_slot` and above (appends a marker). Not for Paxos acceptors
    /// re-accepting after a leader change: they overwrite by appending the new entry, because
    /// forgetting accepted entries at later slots is unsafe.
    pub fn truncate_suffix(&mut self, from_slot: Slot) -> Result<u64> {
        self.append(Kind::TruncateSuffix, from_slot, Ballot::ZERO, &[])
    }

    /// Forgets entries below `below_slot` (a checkpoint covers them) and frees their space. The
    /// promise and commit are re-appended first so freeing old records never loses them; the call
    /// syncs (everything staged is durable on return) and then moves the head in the superblock.
    pub fn discard_prefix(&mut self, below_slot: Slot) -> Result<()> {
        self.check_ok()?;
        if below_slot > self.state.base {
            // Room for every record first, so a discard is staged whole or not at all: the
            // reserve covers one discard, but a second before the head moves may not fit.
            let hard = self.state.hard;
            let records = 1 + usize::from(hard.promise != Ballot::ZERO) + usize::from(hard.commit != 0);
            let end = self.tail_after_header_records(records);
            if end - self.sb.head_lsn > self.sb.capacity_bytes {
                return Err(self.full(end - self.tail_lsn));
            }
            let marker_lsn = self.next_record_lsn(encoded_size_bytes(0) as u64);
            self.append_within(Kind::DiscardPrefix, below_slot, Ballot::ZERO, &[], 0)?;
            if hard.promise != Ballot::ZERO {
                self.append_within(Kind::Promise, 0, hard.promise, &[], 0)?;
            }
            if hard.commit != 0 {
                self.append_within(Kind::Commit, hard.commit, Ballot::ZERO, &[], 0)?;
            }
            let oldest = self.state.oldest_live_lsn().unwrap_or(marker_lsn);
            self.sync()?;
            self.move_head(oldest.min(marker_lsn))?;
        }
        // Same contract either way: on return everything staged is durable.
        self.sync().map(|_| ())
    }

    /// Writes staged records and persists them: one write and one persist for the whole group.
    /// Returns the durable position.
    pub fn sync(&mut self) -> Result<u64> {
        self.check_ok()?;
        if self.written_lsn < self.tail_lsn {
            let capacity = self.sb.capacity_bytes;
            let first_len = (lap_remaining_bytes(self.written_lsn, capacity) as usize).min(self.staging.len());
            let at = medium_offset(self.written_lsn, capacity);
            let staged = std::mem::take(&mut self.staging);
            // Past the group lies free ring space up to the head, within this lap: a group that
            // ends exactly at the lap's end has the medium's end after it, not ring space.
            let lap_left = lap_remaining_bytes(self.tail_lsn, capacity) % capacity;
            let free_after = self.free_bytes().min(lap_left);
            // A group that wraps ends its first part at the lap's end and the rest at the tail.
            let result = match staged.split_at(first_len) {
                (all, []) => self.medium.write_at_end(at, all, free_after),
                (first, rest) => self
                    .medium
                    .write_at(at, first)
                    .and_then(|()| self.medium.write_at_end(DATA_OFFSET_BYTES, rest, free_after)),
            };
            self.staging = staged;
            result.map_err(|e| self.fail("write", e))?;
            self.staging.clear();
            self.written_lsn = self.tail_lsn;
        }
        if self.durable_lsn < self.written_lsn {
            self.medium.persist().map_err(|e| self.fail("persist", e))?;
            self.durable_lsn = self.written_lsn;
        }
        Ok(self.durable_lsn)
    }

    /// The latest entry for `slot`, read back and re-validated, or None if the log has none.
    pub fn read(&self, slot: Slot) -> Result<Option<StoredEntry>> {
        self.check_ok()?;
        let Some(loc) = self.state.entries.get(slot).copied() else { return Ok(None) };
        let size = encoded_size_bytes(loc.payload_len as usize);
        let mut buf = vec![0u8; size];
        if loc.lsn >= self.written_lsn {
            let at = (loc.lsn - self.written_lsn) as usize;
            buf.copy_from_slice(&self.staging[at..at + size]);
        } else {
            let at = medium_offset(loc.lsn, self.sb.capacity_bytes);
            self.medium.read_at(at, &mut buf).map_err(|source| Error::Io {
                resource: self.medium.resource().to_string(),
                op: "read",
                source,
            })?;
        }
        match decode(self.sb.log_id, loc.lsn, &buf) {
            Decoded::Valid(h, payload) if h.kind == Kind::Entry && h.slot == slot => {
                Ok(Some(StoredEntry { slot, ballot: h.ballot, payload: payload.to_vec() }))
            }
            other => Err(Error::Corrupt {
                resource: self.medium.resource().to_string(),
                offset: medium_offset(loc.lsn, self.sb.capacity_bytes),
                lsn: loc.lsn,
                detail: format!("slot {slot} read back as {other:?}"),
            }),
        }
    }

    /// Live slots in order, with the ballot of each one's latest entry.
    pub fn slots(&self) -> impl Iterator<Item = (Slot, Ballot)> + '_ {
        self.state.entries.iter().map(|(slot, loc)| (slot, loc.ballot))
    }

    /// Promise and commit as of the last staged record.
    pub fn hard_state(&self) -> HardState {
        self.state.hard
    }

    /// Slots below this were discarded.
    pub fn base_slot(&self) -> Slot {
        self.state.base
    }

    /// Everything before this position is durable.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }

    /// The next append position.
    pub fn tail_lsn(&self) -> u64 {
        self.tail_lsn
    }

    /// Bytes the ring can still take.
    pub fn free_bytes(&self) -> u64 {
        self.sb.capacity_bytes - (self.tail_lsn - self.sb.head_lsn)
    }

    /// Ring capacity in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.sb.capacity_bytes
    }

    /// Which backend holds the log.
    pub fn backend(&self) -> BackendKind {
        self.medium.kind()
    }

    /// The first I/O error, if the log has failed.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// The medium (for the simulator's crash and fault hooks).
    pub fn medium(&self) -> &M {
        &self.medium
    }

    /// The medium, mutably (fault injection in tests).
    pub fn medium_mut(&mut self) -> &mut M {
        &mut self.medium
    }

    /// Gives the medium back (e.g. to crash it and reopen).
    pub fn into_medium(self) -> M {
        self.medium
    }

    fn append(&mut self, kind: Kind, slot: Slot, ballot: Ballot, payload: &[u8]) -> Result<u64> {
        self.append_within(kind, slot, ballot, payload, DISCARD_RESERVE_BYTES)
    }

    fn append_within(&mut self, kind: Kind, slot: Slot, ballot: Ballot, payload: &[u8], reserve_bytes: u64) -> Result<u64> {
        self.check_ok()?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(self.invalid(format!("payload of {} bytes exceeds {MAX_PAYLOAD_BYTES}", payload.len())));
        }
        let size = encoded_size_bytes(payload.len()) as u64;
        let capacity = self.sb.capacity_bytes;
        let lsn = self.next_record_lsn(size);
        let needed = lsn + size - self.tail_lsn;
        if lsn + size - self.sb.head_lsn + reserve_bytes > capacity {
            return Err(self.full(needed));
        }
        if lsn != self.tail_lsn {
            self.stage_wrap();
        }
        let header = Header {
            kind,
            lsn,
            slot,
            ballot,
            payload_len: payload.len() as u32,
            durable_lsn: self.durable_lsn,
            epoch: self.sb.epoch,
        };
        encode_into(&mut self.staging, self.sb.log_id, &header, payload);
        self.tail_lsn = lsn + size;
        self.state.apply(&header);
        Ok(self.tail_lsn)
    }

    /// Where a record of `size` bytes appended now would start (past the wrap if it does not fit).
    fn next_record_lsn(&self, size: u64) -> u64 {
        record_start_lsn(self.tail_lsn, size, self.sb.capacity_bytes)
    }

    /// Where the tail would be after appending `count` header-only records (wrap gaps included).
    fn tail_after_header_records(&self, count: usize) -> u64 {
        let size = encoded_size_bytes(0) as u64;
        (0..count).fold(self.tail_lsn, |tail, _| record_start_lsn(tail, size, self.sb.capacity_bytes) + size)
    }

    /// Fills the rest of the lap: a Pad record when a header fits, zeros otherwise.
    fn stage_wrap(&mut self) {
        let capacity = self.sb.capacity_bytes;
        let remaining = lap_remaining_bytes(self.tail_lsn, capacity);
        let start = self.staging.len();
        if !implicit_wrap(self.tail_lsn, capacity) {
            let pad = Header {
                kind: Kind::Pad,
                lsn: self.tail_lsn,
                slot: 0,
                ballot: Ballot::ZERO,
                payload_len: 0,
                durable_lsn: self.durable_lsn,
                epoch: self.sb.epoch,
            };
            encode_into(&mut self.staging, self.sb.log_id, &pad, &[]);
        }
        self.staging.resize(start + remaining as usize, 0);
        self.tail_lsn += remaining;
    }

    fn move_head(&mut self, head_lsn: u64) -> Result<()> {
        assert!(head_lsn >= self.sb.head_lsn && head_lsn <= self.durable_lsn, "head moves forward within durable data");
        let next = Superblock { generation: self.sb.generation + 1, head_lsn, ..self.sb };
        next.store(&mut self.medium).map_err(|e| self.fail("write superblock", e))?;
        self.sb = next;
        Ok(())
    }

    fn check_ok(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(reason) => Err(Error::Failed { resource: self.medium.resource().to_string(), reason: reason.clone() }),
        }
    }

    fn fail(&mut self, op: &'static str, source: std::io::Error) -> Error {
        let resource = self.medium.resource().to_string();
        tracing::error!(resource, op, error = %source, "pmem log failed: stops acknowledging; nothing after lsn {} is durable", self.durable_lsn);
        self.failed = Some(format!("{op}: {source}"));
        Error::Io { resource, op, source }
    }

    fn full(&self, needed_bytes: u64) -> Error {
        Error::Full {
            resource: self.medium.resource().to_string(),
            needed_bytes,
            free_bytes: self.free_bytes(),
            capacity_bytes: self.sb.capacity_bytes,
        }
    }

    fn invalid(&self, detail: String) -> Error {
        Error::Invalid { resource: self.medium.resource().to_string(), detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimMedium;

    /// A 6000-byte ring ends inside a 4 KiB block, and the medium ends with it: a group that
    /// fills the lap exactly has no free ring space after it to zero, only the medium's end.
    #[test]
    fn a_group_that_ends_at_the_lap_end_of_an_odd_sized_ring_persists() {
        let mut log = Log::create(SimMedium::new(DATA_OFFSET_BYTES + 6000)).unwrap();
        let ballot = Ballot { round: 1, leader: 1 };
        log.append_entry(0, ballot, &[1; 3500]).unwrap();
        log.sync().unwrap();
        log.discard_prefix(1).unwrap();
        let left = lap_remaining_bytes(log.tail_lsn, log.capacity_bytes());
        let len =
            (0..left as usize).find(|&len| encoded_size_bytes(len) as u64 == left).expect("a record fits exactly");
        log.append_entry(1, ballot, &vec![2; len]).unwrap();
        assert_eq!(log.tail_lsn % log.capacity_bytes(), 0, "the record ends the lap");
        log.sync().unwrap();
        let log = Log::open(log.into_medium().crash(None)).unwrap();
        assert_eq!(log.read(1).unwrap().unwrap().payload, vec![2; len]);
    }

    #[test]
    fn steady_batches_reuse_the_payload_buffer() {
        let mut log = Log::create(SimMedium::new(DATA_OFFSET_BYTES + (1 << 20))).unwrap();
        let mut encode = |_: &Value, out: &mut Vec<u8>| out.extend_from_slice(&[5; 300]);
        let batch = |first: Slot| {
            let entry = |slot| Entry { slot, ballot: Ballot { round: 1, leader: 1 }, value: Value::Noop };
            DurableWrite::Entries((first..first + 16).map(entry).collect())
        };
        log.stage(&batch(0), &mut encode).unwrap();
        log.sync().unwrap();
        let capacity = log.payloads.capacity_bytes();
        assert!(capacity >= 16 * 300, "the first batch grew the buffer to {capacity} bytes");
        log.stage(&batch(16), &mut encode).unwrap();
        log.sync().unwrap();
        // A Vec is reallocated only to grow or shrink, which changes its capacity.
        assert_eq!(log.payloads.capacity_bytes(), capacity, "the second batch encoded into the same buffer");
        assert_eq!(log.read(31).unwrap().unwrap().payload, vec![5; 300]);
    }
}
