//! A batch of client requests, as one proposed value holds it: the requests' encodings back to
//! back in one buffer (postcard, one `Request` each), so the log, the wire and the durable log all
//! carry the same bytes. Building a batch copies its requests into the proposer's chunk arena and
//! decoding one copies it into the decoding thread's: neither allocates per batch or per request,
//! and a request's op never has a buffer of its own once proposed. Applying walks the buffer,
//! borrowing each op.

use crate::chunk_arena::ChunkArena;
use crate::types::{ClientId, Request};
use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeTuple, Serializer};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::fmt;

/// Chunk size of the arenas batches are built and decoded into.
pub const BATCH_ARENA_CHUNK_BYTES: usize = 4 << 20;
/// Batches larger than this get an allocation of their own. A full batch under the default
/// `max_batch_bytes` (1 MiB, counting 16 bytes per request for what the encoding adds; postcard
/// adds 3-25) fits.
pub const BATCH_ARENA_LARGEST_INLINE_BYTES: usize = 3 << 19;

/// An arena sized for batches.
pub fn batch_arena() -> ChunkArena {
    ChunkArena::new(BATCH_ARENA_CHUNK_BYTES, BATCH_ARENA_LARGEST_INLINE_BYTES)
}

thread_local! {
    /// Where this thread copies the batches it decodes (a peer link's reader, log recovery).
    static DECODE_ARENA: RefCell<ChunkArena> = RefCell::new(batch_arena());
}

/// One request of a batch, borrowing its op from the batch's buffer.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRef<'a> {
    /// The client session that issued it.
    pub client: ClientId,
    /// Its per-client sequence number.
    pub seq: u64,
    /// The state machine operation.
    #[serde(borrow, serialize_with = "serialize_op")]
    pub op: &'a [u8],
}

/// As one byte string (what `Bytes` does), not a sequence of u8s: the same encoding, one copy.
fn serialize_op<S: Serializer>(op: &&[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_bytes(op)
}

/// Bytes of a postcard varint holding `value`.
fn varint_len(value: u64) -> usize {
    (64 - value.leading_zeros() as usize).div_ceil(7).max(1)
}

impl RequestRef<'_> {
    /// Bytes of this request's (canonical) postcard encoding.
    pub fn encoded_len(&self) -> usize {
        varint_len(self.client.0) + varint_len(self.seq) + varint_len(self.op.len() as u64) + self.op.len()
    }
}

/// Printed as a `Request` prints (the op as an escaped byte string), so logs and traces read the same.
impl fmt::Debug for RequestRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Request {{ client: {:?}, seq: {}, op: b\"{}\" }}", self.client, self.seq, self.op.escape_ascii())
    }
}

/// `count` requests encoded back to back in `bytes`. Always valid: every constructor either encodes
/// the requests itself or checks outside bytes first. Equal batches have equal bytes (the encoding
/// is canonical), which is what equality compares.
#[derive(Clone, PartialEq, Eq)]
pub struct Batch {
    count: u32,
    bytes: Bytes,
}

impl Batch {
    /// Encodes `requests` into `arena` (a slice of its chunk, no allocation of its own).
    pub fn encode<'r, I>(requests: I, arena: &mut ChunkArena) -> Batch
    where
        I: Iterator<Item = &'r Request> + Clone,
    {
        let as_ref = |request: &'r Request| RequestRef { client: request.client, seq: request.seq, op: &request.op };
        let total = requests.clone().map(|r| as_ref(r).encoded_len()).sum();
        let mut count = 0u32;
        let bytes = arena.write(total, |out| {
            // Sized once; each request is encoded after the one before.
            let (start, mut at) = (out.len(), out.len());
            out.resize(start + total, 0);
            for request in requests.map(as_ref) {
                let used = postcard::to_slice(&request, &mut out[at..]).map(|used| used.len());
                at += used.expect("contract violated: batch-encoded-length");
                count += 1;
            }
            assert_eq!(at, start + total, "contract violated: batch-encoded-length");
        });
        Batch { count, bytes }
    }

    /// A batch of `requests` in a buffer of its own (tests, tools; the leader uses `encode`).
    pub fn from_requests(requests: &[Request]) -> Batch {
        Batch::encode(requests.iter(), &mut ChunkArena::new(0, 0))
    }

    /// A batch from outside bytes: `count` requests that must decode, each in its canonical
    /// encoding (so two batches are equal exactly when their bytes are), and fill `bytes` exactly.
    pub fn from_encoded(count: u32, bytes: Bytes) -> Result<Batch, &'static str> {
        let mut rest = &bytes[..];
        for _ in 0..count {
            // Each request takes at least 3 bytes, so a huge count fails as soon as the bytes end.
            let (request, after) = postcard::take_from_bytes::<RequestRef<'_>>(rest)
                .map_err(|_| "a batch holds fewer well-formed requests than it says")?;
            if rest.len() - after.len() != request.encoded_len() {
                return Err("a batch holds a request in a non-canonical encoding");
            }
            rest = after;
        }
        if !rest.is_empty() {
            return Err("a batch holds bytes after its last request");
        }
        Ok(Batch { count, bytes })
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch holds no request.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the requests' encoding.
    pub fn size_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The requests, in order.
    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter { rest: &self.bytes, left: self.count }
    }
}

/// The requests of a batch, decoded as they are walked.
pub struct BatchIter<'a> {
    rest: &'a [u8],
    left: u32,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = RequestRef<'a>;

    fn next(&mut self) -> Option<RequestRef<'a>> {
        if self.left == 0 {
            return None;
        }
        let (request, rest) = postcard::take_from_bytes::<RequestRef<'a>>(self.rest)
            .expect("contract violated: batch-valid-by-construction");
        self.left -= 1;
        self.rest = rest;
        Some(request)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left as usize, Some(self.left as usize))
    }
}

impl ExactSizeIterator for BatchIter<'_> {}

impl<'a> IntoIterator for &'a Batch {
    type Item = RequestRef<'a>;
    type IntoIter = BatchIter<'a>;

    fn into_iter(self) -> BatchIter<'a> {
        self.iter()
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// On the wire and in the log: the count, then the encoding as one byte string.
impl Serialize for Batch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(2)?;
        tuple.serialize_element(&self.count)?;
        // `Bytes` serializes as one byte string.
        tuple.serialize_element(&self.bytes)?;
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Batch, D::Error> {
        deserializer.deserialize_tuple(2, BatchVisitor)
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a batch: a request count and the requests' encoding")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
        let count: u32 = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let encoded: ArenaBytes = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
        Batch::from_encoded(count, encoded.0).map_err(de::Error::custom)
    }
}

/// A byte string copied into this thread's decode arena.
struct ArenaBytes(Bytes);

impl<'de> Deserialize<'de> for ArenaBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ArenaBytes, D::Error> {
        deserializer.deserialize_bytes(ArenaBytesVisitor)
    }
}

struct ArenaBytesVisitor;

impl<'de> Visitor<'de> for ArenaBytesVisitor {
    type Value = ArenaBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<ArenaBytes, E> {
        Ok(ArenaBytes(DECODE_ARENA.with(|arena| arena.borrow_mut().carve(bytes))))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<ArenaBytes, E> {
        Ok(ArenaBytes(Bytes::from(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(client: u64, seq: u64, op: &[u8]) -> Request {
        Request { client: ClientId(client), seq, op: Bytes::copy_from_slice(op) }
    }

    proptest! {
        #[test]
        fn a_batch_walks_back_the_requests_it_was_built_from(
            requests in proptest::collection::vec((any::<u64>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..50)
        ) {
            let requests: Vec<Request> = requests.iter().map(|(c, s, op)| request(*c, *s, op)).collect();
            let mut arena = batch_arena();
            let batch = Batch::encode(requests.iter(), &mut arena);
            prop_assert_eq!(batch.len(), requests.len());
            for (walked, built) in batch.iter().zip(&requests) {
                prop_assert_eq!((walked.client, walked.seq, walked.op), (built.client, built.seq, &built.op[..]));
            }
            let decoded: Batch = postcard::from_bytes(&postcard::to_allocvec(&batch).unwrap()).unwrap();
            prop_assert_eq!(&decoded, &batch);
            prop_assert_eq!(Batch::from_requests(&requests), batch);
        }
    }

    #[test]
    fn each_request_is_encoded_as_postcard_encodes_a_request() {
        let requests = [request(7, 300, b"put"), request(1, 1, b"")];
        let batch = Batch::from_requests(&requests);
        let expected: Vec<u8> = requests.iter().flat_map(|r| postcard::to_allocvec(r).unwrap()).collect();
        assert_eq!(&batch.bytes[..], &expected[..]);
    }

    #[test]
    fn the_encoded_length_is_exact_at_every_varint_boundary() {
        for value in [0, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let request = RequestRef { client: ClientId(value), seq: value, op: &[] };
            assert_eq!(request.encoded_len(), postcard::to_allocvec(&request).unwrap().len(), "at {value}");
        }
    }

    #[test]
    fn a_batch_prints_its_requests_as_requests_print() {
        let requests = [request(7, 3, b"put k1 \x01")];
        assert_eq!(format!("{:?}", Batch::from_requests(&requests)), format!("{requests:?}"));
    }

    #[test]
    fn batches_built_in_a_row_share_the_arena_chunk() {
        let mut arena = batch_arena();
        let first = Batch::encode([request(1, 1, b"a")].iter(), &mut arena);
        let second = Batch::encode([request(1, 2, b"b")].iter(), &mut arena);
        assert_eq!(second.bytes.as_ptr(), first.bytes.as_ptr().wrapping_add(first.size_bytes()));
    }

    #[test]
    fn outside_bytes_that_miscount_or_trail_are_refused() {
        let batch = Batch::from_requests(&[request(1, 1, b"x"), request(2, 1, b"y")]);
        assert!(Batch::from_encoded(2, batch.bytes.clone()).is_ok());
        assert!(Batch::from_encoded(3, batch.bytes.clone()).is_err(), "a count above the requests held");
        assert!(Batch::from_encoded(1, batch.bytes.clone()).is_err(), "bytes after the counted requests");
        assert!(Batch::from_encoded(u32::MAX, batch.bytes.clone()).is_err(), "a huge count");
        // client 1 as a two-byte varint (0x81 0x00) instead of 0x01: decodes, but not canonical
        let mut long = vec![0x81, 0x00];
        long.extend_from_slice(&batch.bytes[1..]);
        assert!(Batch::from_encoded(2, Bytes::from(long)).is_err(), "an over-long varint");
        let mut wire = postcard::to_allocvec(&batch).unwrap();
        wire[0] = 3; // the count
        assert!(postcard::from_bytes::<Batch>(&wire).is_err(), "the decoder checks what it copies");
    }
}
