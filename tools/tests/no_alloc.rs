//! The client request path of an I/O thread allocates nothing per request: op bytes go into the
//! I/O thread's op arena, which allocates a chunk per 64 KiB of ops still held.
//!
//! A counting global allocator (this test binary's own) watches N requests after a warm-up go the
//! whole way an I/O thread and the core thread take them, minus sockets and the protocol: frame
//! bytes into a connection's read buffer, decode, dispatch as an `Event` into the inbox ring, the
//! "core" pops it and answers through the connection's `ConnResponder` (the I/O thread's answer
//! ring), the I/O thread pops the answer and encodes it into the write buffer, the bytes are
//! "sent". The "core" keeps the latest requests alive as its log would, so arena chunks cannot simply
//! be reused. Expected: no allocation but the arena's new chunks (a buffer and its shared header).
//!
//! The same counter watches the request's next two stops once warm: the persistence thread's
//! write of batches to the log (stage and group commit), and the key-value store executing puts
//! that overwrite held keys with values of the same length. Expected: no allocation at all.

use bytes::Bytes;
use decree_engine::batch::Batch;
use decree_engine::chunk_arena::ChunkArena;
use decree_engine::core::DurableWrite;
use decree_engine::kv::{KvOp, KvStore};
use decree_engine::membership::Membership;
use decree_engine::runtime::{Event, Inbox, LogStorage, Responder, Response};
use decree_engine::state_machine::StateMachine;
use decree_engine::types::{Ballot, Checkpoint, ClientId, Entry, ReplicaId, Request, Value};
use decree_tools::replica::io_thread::{ConnKey, IoShared};
use decree_tools::replica::op_arena::{op_arena, OP_ARENA_CHUNK_BYTES};
use decree_tools::replica::session::{dispatch, ConnResponder, Session};
use decree_tools::replica::storage::PmemStorage;
use decree_tools::wire::{self, ClientFrame};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::counted;

const WARM_UP_REQUESTS: u64 = 1_000;
const COUNTED_REQUESTS: u64 = 10_000;
/// A put of a 16-byte key and a 64-byte value is about this long once postcard-encoded.
const OP_BYTES: usize = 90;
/// Requests the "core" keeps alive, as its log keeps ops until a checkpoint covers them.
const HELD_REQUESTS: usize = 2_000;

/// One connection and what its requests pass through.
struct Path {
    frames: Vec<Vec<u8>>,
    session: Session,
    ops: ChunkArena,
    held: VecDeque<decree_engine::types::Request>,
    responder: ConnResponder,
    io: Arc<IoShared>,
    inbox: Inbox<ConnResponder>,
    members: HashMap<u32, String>,
    payload: Bytes,
}

impl Path {
    /// Runs requests `ids` through the path; returns how many answers were sent.
    fn serve(&mut self, ids: std::ops::Range<u64>) -> u64 {
        let mut answered = 0;
        for id in ids {
            // Socket -> read buffer (several frames per read in real life; one here is the worst case).
            let bytes = &self.frames[(id % self.frames.len() as u64) as usize];
            self.session.read_space()[..bytes.len()].copy_from_slice(bytes);
            self.session.received(bytes.len());
            while let Some(frame) = self.session.next_frame(&mut self.ops) {
                let frame = frame.expect("a well-formed frame");
                assert!(dispatch(frame, &self.responder, &self.inbox, &self.members).is_none(), "the inbox has room");
            }
            // The core thread answers.
            let Some(Event::Request { request, request_id, reply_to }) = self.inbox.pop() else {
                panic!("a request event")
            };
            reply_to.respond(request_id, Response::Reply { seq: request.seq, payload: self.payload.clone() });
            if self.held.len() == HELD_REQUESTS {
                self.held.pop_front();
            }
            self.held.push_back(request);
            // The I/O thread encodes the answer and writes it out.
            while let Some(answer) = self.io.next_answer() {
                assert!(self.session.push_response(answer.request_id, &answer.response, &self.members));
            }
            let unsent = self.session.unsent().len();
            assert!(unsent > 0);
            self.session.sent(unsent);
            answered += 1;
        }
        answered
    }
}

#[test]
fn the_request_path_allocates_only_op_arena_chunks() {
    let poll = mio::Poll::new().unwrap();
    let io = Arc::new(IoShared::new(poll.registry()).unwrap());
    let frames: Vec<Vec<u8>> = (0..64u8)
        .map(|n| {
            let mut out = Vec::new();
            let op = Bytes::from(vec![n; OP_BYTES]);
            wire::encode(
                &ClientFrame::Request { request_id: u64::from(n), client: 7, seq: u64::from(n), op },
                &mut out,
            );
            out
        })
        .collect();
    let mut path = Path {
        frames,
        session: Session::new(),
        ops: op_arena(),
        held: VecDeque::with_capacity(HELD_REQUESTS),
        responder: ConnResponder::new(io.clone(), ConnKey::new(0, 0)),
        io,
        inbox: Inbox::new(4_096, false),
        members: [(1, "127.0.0.1:7000".to_string()), (2, "127.0.0.1:7001".to_string())].into(),
        payload: Bytes::from(vec![0xab; 64]),
    };

    assert_eq!(path.serve(0..WARM_UP_REQUESTS), WARM_UP_REQUESTS);
    let mut answered = 0;
    let (allocations, bytes) = counted(|| answered = path.serve(0..COUNTED_REQUESTS));
    assert_eq!(answered, COUNTED_REQUESTS);
    // Each chunk is a buffer plus the header that shares it; the first may still be the warm-up's.
    let chunks = COUNTED_REQUESTS * OP_BYTES as u64 / OP_ARENA_CHUNK_BYTES as u64 + 1;
    eprintln!("{allocations} allocations, {bytes} bytes, {chunks} chunks");
    assert!(
        allocations <= 2 * chunks,
        "{allocations} allocations for {COUNTED_REQUESTS} requests ({chunks} chunks of ops)"
    );
    assert!(allocations >= chunks - 1, "ops held by the core must outlive their chunk's reuse");
    assert!(bytes <= chunks * (OP_ARENA_CHUNK_BYTES as u64 + 64), "{bytes} bytes allocated");
}

/// The counter itself works: a path that allocates per request is caught.
#[test]
fn the_counter_sees_an_allocation_per_request() {
    let mut owned = Vec::new();
    let (allocations, bytes) = counted(|| owned = (0..100).map(|n| vec![n as u8; 10]).collect::<Vec<_>>());
    assert!(allocations >= 101, "{allocations} allocations for {owned:?}");
    assert!(bytes >= 100 * 10 + 100 * std::mem::size_of::<Vec<u8>>() as u64);
}

/// Batches the persistence thread writes per checkpoint in the log test.
const ROUNDS_PER_CHECKPOINT: u64 = 50;

/// The persistence thread's rounds as the core would hand them over: a batch of entries (each a
/// batch of puts), its commit, and every so often a checkpoint that discards the log's prefix.
fn persist_rounds(rounds: std::ops::Range<u64>) -> Vec<Vec<DurableWrite>> {
    let ballot = Ballot::new(1, ReplicaId(1));
    let requests: Vec<Request> =
        (0..32).map(|seq| Request { client: ClientId(7), seq, op: Bytes::from(vec![seq as u8; OP_BYTES]) }).collect();
    let value = Value::Batch(Batch::from_requests(&requests));
    let entries_per_round = 4;
    rounds
        .map(|round| {
            let first = round * entries_per_round;
            let slots = first..first + entries_per_round;
            let entries = slots.map(|slot| Entry { slot, ballot, value: value.clone() }).collect();
            let mut writes = vec![DurableWrite::Entries(entries), DurableWrite::Commit(first + entries_per_round)];
            if round % ROUNDS_PER_CHECKPOINT == ROUNDS_PER_CHECKPOINT - 1 {
                let membership = Membership::new(vec![ReplicaId(1)]);
                let data = Bytes::from_static(b"state");
                writes.push(DurableWrite::Checkpoint(Checkpoint { slot: first, membership, config_slot: None, data }));
            }
            writes
        })
        .collect()
}

#[test]
fn the_log_write_of_a_warm_replica_allocates_nothing() {
    let allocations = warm_log_write_allocations("memory", decree_pmem::Backend::Memory).expect("memory always opens");
    assert_eq!(allocations, 0, "allocations writing 1500 rounds of 4 entries");
}

/// The O_DIRECT file log's staging reuses its blocks: it allocates nothing the page-cache file
/// log does not (both write a checkpoint file every 50 rounds, which allocates its paths).
#[test]
fn the_direct_file_log_allocates_no_more_than_the_page_cache_one() {
    use decree_pmem::{Backend, FileStrategy};
    let Some(direct) = warm_log_write_allocations("direct", Backend::File(FileStrategy::Direct)) else { return };
    let pwrite = warm_log_write_allocations("pwrite", Backend::File(FileStrategy::Pwrite)).expect("pwrite opens");
    assert_eq!(direct, pwrite, "allocations writing 1500 rounds: O_DIRECT {direct}, page cache {pwrite}");
}

/// Allocations while a warm log on `backend` writes 1500 rounds; None if it cannot open here.
fn warm_log_write_allocations(tag: &str, backend: decree_pmem::Backend) -> Option<u64> {
    let dir = std::env::temp_dir().join(format!("decree-no-alloc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = decree_pmem::Config { path: dir.join("log"), size_bytes: 16 << 20, backend };
    let (mut storage, _) = match PmemStorage::open(&config) {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("skipped: {e}");
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        }
    };
    let mut ticket = 0;
    let mut serve = |rounds: Vec<Vec<DurableWrite>>| {
        for writes in rounds {
            for write in &writes {
                ticket += 1;
                storage.stage(ticket, write).unwrap();
            }
            assert_eq!(storage.sync().unwrap(), Some(ticket));
        }
    };
    // Warm-up: two checkpoint cycles and more than a lap of the 16 MiB ring (about 12 KiB a round).
    serve(persist_rounds(0..1_500));
    let counted_rounds = persist_rounds(1_500..3_000);
    let (allocations, bytes) = counted(|| serve(counted_rounds));
    eprintln!("{tag}: {allocations} allocations, {bytes} bytes for 1500 rounds");
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
    Some(allocations)
}

#[test]
fn overwriting_puts_of_a_warm_store_allocate_nothing() {
    let put = |key: u64, fill: u8| KvOp::Put {
        key: Bytes::from(key.to_be_bytes().repeat(2)),
        value: Bytes::from(vec![fill; 64]),
    };
    let ops: Vec<Bytes> = (0..COUNTED_REQUESTS).map(|n| put(n % 1_000, n as u8).encode()).collect();
    let mut store = KvStore::default();
    for key in 0..1_000 {
        store.execute(&put(key, 0).encode());
    }
    let (allocations, bytes) = counted(|| {
        for op in &ops {
            assert_eq!(&store.execute(op)[..], &[1]);
        }
    });
    eprintln!("{allocations} allocations, {bytes} bytes for {COUNTED_REQUESTS} puts");
    assert_eq!(allocations, 0, "{bytes} bytes allocated by {COUNTED_REQUESTS} overwriting puts");
    assert_eq!(store.get(&999u64.to_be_bytes().repeat(2)).unwrap()[..], [(COUNTED_REQUESTS - 1) as u8; 64]);
}
