//! Recovery: replay the longest valid prefix of the record stream from the ring's head, cut a
//! torn tail, and refuse to start when a record that was durable is damaged.
//!
//! Torn versus corrupt: every record carries `durable_lsn`, the durable end of the log when it was
//! written. If the first invalid position P is followed (later in the ring) by a valid record
//! whose `durable_lsn > P`, then P had been persisted and acknowledged before: that is corruption,
//! an error naming the file offset. Otherwise P lies in writes that were never persisted (a crash
//! during a group commit may land later records before earlier ones) and is cut.
//! Limitation: damage to the last persisted batch, with nothing valid written after it, cannot be
//! told from a torn tail and is cut.

use crate::error::{Error, Result};
use crate::medium::Medium;
use crate::record::{decode, Decoded, Kind, ALIGN_BYTES};
use crate::ring::{implicit_wrap, lap_remaining_bytes, medium_offset};
use crate::state::LogState;
use crate::superblock::Superblock;
use crate::window::RingWindow;

/// What recovery found.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// The replayed state.
    pub state: LogState,
    /// End of the valid prefix: the next append goes here.
    pub end_lsn: u64,
    /// Records replayed (pads excluded).
    pub record_count: u64,
    /// Why the scan stopped at `end_lsn` (None when the ring was full).
    pub stop_reason: Option<String>,
}

/// Replays the ring of `medium` described by `sb`.
pub fn recover(medium: &dyn Medium, sb: &Superblock) -> Result<Recovered> {
    let capacity = sb.capacity_bytes;
    let mut ring = RingWindow::new(medium, capacity);
    let limit = sb.head_lsn + capacity;
    let mut state = LogState::default();
    let mut lsn = sb.head_lsn;
    let mut record_count = 0u64;
    let mut stop_reason = None;
    while lsn < limit {
        if implicit_wrap(lsn, capacity) {
            lsn += lap_remaining_bytes(lsn, capacity);
            continue;
        }
        let bytes = ring.record_bytes(lsn % capacity, lsn).map_err(|e| read_error(medium, e))?;
        match decode(sb.log_id, lsn, bytes) {
            Decoded::Valid(header, _) if !sb.accepts(lsn, header.epoch) => {
                stop_reason = Some(format!("record of epoch {} at lsn {lsn}, stale for epoch {}", header.epoch, sb.epoch));
                break;
            }
            Decoded::Valid(header, _) if header.kind == Kind::Pad => lsn += lap_remaining_bytes(lsn, capacity),
            Decoded::Valid(header, _) if lsn + header.encoded_size_bytes() as u64 > limit => {
                stop_reason = Some("record overlaps the ring head".into());
                break;
            }
            Decoded::Valid(header, _) => {
                state.apply(&header);
                record_count += 1;
                lsn += header.encoded_size_bytes() as u64;
            }
            other => {
                stop_reason = Some(format!("{other:?}"));
                break;
            }
        }
    }
    if let Some(reason) = &stop_reason {
        check_no_durable_record_after(medium, sb, &mut ring, lsn, reason)?;
    }
    Ok(Recovered { state, end_lsn: lsn, record_count, stop_reason })
}

/// Fails if a valid record after `end_lsn` proves `end_lsn` was durable.
fn check_no_durable_record_after(
    medium: &dyn Medium,
    sb: &Superblock,
    ring: &mut RingWindow<'_>,
    end_lsn: u64,
    reason: &str,
) -> Result<()> {
    let capacity = sb.capacity_bytes;
    let mut lsn = end_lsn + ALIGN_BYTES as u64;
    while lsn < sb.head_lsn + capacity {
        if !implicit_wrap(lsn, capacity) {
            let bytes = ring.record_bytes(lsn % capacity, lsn).map_err(|e| read_error(medium, e))?;
            if let Decoded::Valid(header, _) = decode(sb.log_id, lsn, bytes) {
                if sb.accepts(lsn, header.epoch) && header.durable_lsn > end_lsn {
                    return Err(Error::Corrupt {
                        resource: medium.resource().to_string(),
                        offset: medium_offset(end_lsn, capacity),
                        lsn: end_lsn,
                        detail: format!(
                            "record fails validation ({reason}) but the record at lsn {lsn} was written after \
                             everything below lsn {} was durable",
                            header.durable_lsn
                        ),
                    });
                }
            }
        }
        lsn += ALIGN_BYTES as u64;
    }
    Ok(())
}

fn read_error(medium: &dyn Medium, source: std::io::Error) -> Error {
    Error::Io { resource: medium.resource().to_string(), op: "read ring", source }
}
