//! Property tests of the replica wire codec: every message round-trips, and arbitrary or corrupted
//! bytes return an error instead of panicking.

use bytes::Bytes;
use decree_engine::batch::Batch;
use decree_engine::codec::{decode_frame, encode_frame, frame_len, CodecError, FRAME_HEADER_BYTES};
use decree_engine::message::*;
use decree_engine::types::*;
use proptest::prelude::*;

fn ballot() -> impl Strategy<Value = Ballot> {
    (0u64..1_000, 0u32..7).prop_map(|(round, leader)| Ballot { round, leader })
}

fn membership() -> impl Strategy<Value = decree_engine::membership::Membership> {
    (prop::collection::btree_set(0u32..6, 1..4), prop::collection::btree_set(6u32..9, 0..3)).prop_map(
        |(voters, learners)| {
            decree_engine::membership::Membership::try_new(
                voters.into_iter().map(ReplicaId).collect(),
                learners.into_iter().map(ReplicaId).collect(),
            )
            .expect("disjoint, non-empty")
        },
    )
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Noop),
        membership().prop_map(Value::Reconfig),
        prop::collection::vec((any::<u64>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)), 0..5).prop_map(
            |rs| {
                Value::Batch(Batch::from_requests(
                    &rs.into_iter()
                        .map(|(c, s, op)| Request { client: ClientId(c), seq: s, op: Bytes::from(op) })
                        .collect::<Vec<_>>(),
                ))
            }
        ),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (ballot(), any::<u64>()).prop_map(|(ballot, from_slot)| Message::Prepare(Prepare {
            ballot,
            from_slot,
            transfer: false
        })),
        (ballot(), any::<u64>(), prop::collection::vec((ballot(), value()), 0..6)).prop_map(|(b, commit, es)| {
            let entries = es
                .into_iter()
                .enumerate()
                .map(|(i, (eb, value))| Entry { slot: i as u64 * 2, ballot: eb.min(b), value })
                .collect();
            Message::Promise(Promise { ballot: b, commit, log_base: 0, entries })
        }),
        (ballot(), 0u64..1 << 40, prop::collection::vec(value(), 0..6), any::<u64>()).prop_map(
            |(ballot, start, values, commit)| Message::Accept(Accept {
                ballot,
                start,
                values: values.into(),
                commit,
                awaited: true
            })
        ),
        (ballot(), any::<u64>()).prop_map(|(ballot, upto)| Message::Accepted(Accepted { ballot, upto, round: 0 })),
        (ballot(), ballot())
            .prop_map(|(ballot, promised)| Message::Reject(Reject { ballot, reason: Rejection::Stale { promised } })),
        (ballot(), any::<u64>())
            .prop_map(|(ballot, horizon)| Message::Reject(Reject { ballot, reason: Rejection::Gap { horizon } })),
        (ballot(), any::<u64>()).prop_map(|(ballot, commit)| Message::Heartbeat(Heartbeat {
            ballot,
            commit,
            round: 0
        })),
        (ballot(), any::<u64>()).prop_map(|(ballot, from_slot)| Message::Fetch(Fetch { ballot, from_slot })),
        (ballot(), 0u64..1 << 40, prop::collection::vec((ballot(), value()), 0..4)).prop_map(|(ballot, start, es)| {
            let entries: Vec<Entry> = es
                .into_iter()
                .enumerate()
                .map(|(i, (b, value))| Entry { slot: start + i as u64, ballot: b, value })
                .collect();
            let commit = start + entries.len() as u64;
            Message::Chosen(Chosen { ballot, start, entries, commit })
        }),
        (ballot(), any::<u64>(), membership(), prop::collection::vec(any::<u8>(), 0..64), 0u64..64).prop_map(
            |(ballot, slot, membership, data, extra)| {
                let total_bytes = data.len() as u64 + extra;
                Message::Snapshot(SnapshotChunk {
                    ballot,
                    slot,
                    membership,
                    config_slot: None,
                    total_bytes,
                    checksum: 7,
                    offset: extra,
                    data: Bytes::from(data),
                })
            }
        ),
        (ballot(), any::<u64>(), any::<u64>())
            .prop_map(|(ballot, slot, offset)| { Message::SnapshotRequest(SnapshotRequest { ballot, slot, offset }) }),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (0u32..7, 0u32..7, message()).prop_map(|(from, to, msg)| Envelope { from: ReplicaId(from), to: ReplicaId(to), msg })
}

proptest! {
    #[test]
    fn every_message_round_trips(envelope in envelope()) {
        let mut bytes = Vec::new();
        encode_frame(&envelope, &mut bytes);
        prop_assert_eq!(frame_len(&bytes).unwrap(), bytes.len());
        let (decoded, used) = decode_frame(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, envelope);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes);
        let _ = frame_len(&bytes);
    }

    #[test]
    fn a_flipped_payload_bit_is_detected(envelope in envelope(), position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = Vec::new();
        encode_frame(&envelope, &mut bytes);
        let payload_len = bytes.len() - FRAME_HEADER_BYTES;
        prop_assume!(payload_len > 0);
        let at = FRAME_HEADER_BYTES + position.index(payload_len);
        bytes[at] ^= 1 << bit;
        let detected = matches!(decode_frame(&bytes), Err(CodecError::BadChecksum { .. }));
        prop_assert!(detected, "a flipped bit went unnoticed");
    }

    #[test]
    fn valid_header_with_garbage_payload_is_an_error(payload in prop::collection::vec(any::<u8>(), 0..256)) {
        let bytes = framed(&payload);
        // Either a message that passes validation or a clean error: never a panic.
        if let Ok((_, used)) = decode_frame(&bytes) {
            prop_assert_eq!(used, bytes.len());
        }
    }
}

#[test]
fn oversize_and_foreign_frames_are_refused_before_allocation() {
    let mut header = vec![0u8; FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&decree_engine::codec::FRAME_MAGIC.to_le_bytes());
    header[4..6].copy_from_slice(&decree_engine::codec::FRAME_VERSION.to_le_bytes());
    header[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(frame_len(&header), Err(CodecError::Oversize(_))));
    header[4..6].copy_from_slice(&99u16.to_le_bytes());
    assert_eq!(frame_len(&header), Err(CodecError::UnsupportedVersion(99)));
    assert!(matches!(frame_len(b"GET / HTTP/1.1\r\n\r\n"), Err(CodecError::BadMagic(_))));
}

#[test]
fn structurally_invalid_promises_are_refused() {
    let b = Ballot { round: 1, leader: 0 };
    let entry = |slot| Entry { slot, ballot: b, value: Value::Noop };
    let unordered = Message::Promise(Promise { ballot: b, commit: 0, log_base: 0, entries: vec![entry(3), entry(2)] });
    let mut bytes = Vec::new();
    encode_frame(&Envelope { from: ReplicaId(0), to: ReplicaId(1), msg: unordered }, &mut bytes);
    assert!(matches!(decode_frame(&bytes), Err(CodecError::Invalid(_))));
}

/// A frame of an accept with `count` no-op values: Envelope { from: 0, to: 1, msg: Accept {
/// ballot: 1.0, start: 0, values, commit: 0, awaited: true } }, postcard-encoded by hand.
fn accept_frame_with_noops(count: usize) -> Vec<u8> {
    let mut payload = vec![0x00, 0x01, 0x02, 0x01, 0x00, 0x00];
    let mut length = count as u64;
    while length >= 0x80 {
        payload.push((length as u8) | 0x80);
        length >>= 7;
    }
    payload.push(length as u8);
    payload.extend(std::iter::repeat_n(0x00, count)); // a Noop is its variant index
    payload.push(0x00); // commit
    payload.push(0x01); // awaited
    framed(&payload)
}

/// `payload` behind a valid header (magic, version, length, checksum), whatever it holds.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; FRAME_HEADER_BYTES];
    frame[0..4].copy_from_slice(&decree_engine::codec::FRAME_MAGIC.to_le_bytes());
    frame[4..6].copy_from_slice(&decree_engine::codec::FRAME_VERSION.to_le_bytes());
    frame[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    frame[12..16].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn an_accept_announcing_too_many_values_is_refused_while_decoding_not_after() {
    use decree_engine::codec::MAX_ENTRIES_PER_MESSAGE;
    let (envelope, _) =
        decode_frame(&accept_frame_with_noops(MAX_ENTRIES_PER_MESSAGE)).expect("the limit itself decodes");
    assert!(matches!(envelope.msg, Message::Accept(ref a) if a.values.len() == MAX_ENTRIES_PER_MESSAGE));
    // Malformed (the decoder refused the announced length before reserving room for it), not
    // Invalid (decoded in full, then judged by `validate`).
    let over = decode_frame(&accept_frame_with_noops(MAX_ENTRIES_PER_MESSAGE + 1));
    assert!(matches!(over, Err(CodecError::Malformed(_))), "{over:?}");
}
