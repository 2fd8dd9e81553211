//! Load on a decree cluster through its client wire protocol, pipelined. Each connection carries
//! several client sessions (distinct client ids, one request in flight each, as the protocol
//! requires), so a few threads keep many operations outstanding. decree-tools' `Client` runs one
//! blocking operation at a time per thread, which on a 2-core machine measures thread switches
//! more than the cluster; the pipelined sender is built here for that reason, on the public
//! `dial` (authentication) and `wire` (framing) of decree-tools.

use crate::error::BenchError;
use crate::load::{write_key, LoadOutcome, LoadSpec, Recorder};
use crate::progress::Progress;
use crate::schedule::{precise_timers, sender_wait, Arrival, Schedule};
use crossbeam::channel::{self, Receiver, Sender};
use decree_engine::kv::KvOp;
use decree_tools::client::dial;
use decree_tools::replica::session::WRITE_BACKLOG_LIMIT_BYTES;
use decree_tools::secret::random_u64;
use decree_tools::wire::{self, ClientFrame, ServerFrame};
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Sessions per connection are numbered in the low bits of the request id.
const SESSION_BITS: u32 = 20;
/// Most sessions one connection may carry.
pub const MAX_SESSIONS_PER_CONNECTION: usize = 1 << SESSION_BITS;

/// Times shared by every connection of a run, in ns since `base`.
struct Window {
    base: Instant,
    start_ns: u64,
    end_ns: u64,
    completed: Arc<AtomicU64>,
    failure: Mutex<Option<String>>,
}

impl Window {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn fail(&self, why: String) {
        self.failure
            .lock()
            .expect("failure lock")
            .get_or_insert(why);
    }

    fn failed(&self) -> bool {
        self.failure.lock().expect("failure lock").is_some()
    }
}

/// One session's request in flight: when it was meant to start and when it was sent.
struct InFlight {
    intended_ns: AtomicU64,
    sent_ns: AtomicU64,
}

/// A session the reader hands back to the sender: (session, resend the same request?).
type Freed = (usize, bool);

/// Sessions freed by one burst of replies (what one read brought in): the reader hands them
/// over in one channel message, not one per reply (the channel was the load generator's largest
/// cost).
type FreedBatch = Vec<Freed>;

struct ReaderTally {
    recorder: Recorder,
    errors: u64,
    busy: u64,
}

fn reader_loop(
    stream: TcpStream,
    flights: Arc<Vec<InFlight>>,
    freed: Sender<FreedBatch>,
    window: Arc<Window>,
) -> ReaderTally {
    let mut tally = ReaderTally {
        recorder: Recorder::for_window_from(window.start_ns),
        errors: 0,
        busy: 0,
    };
    let mut reader = BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    let mut batch = FreedBatch::new();
    let mask = (1u64 << SESSION_BITS) - 1;
    // When the replies now in the buffer arrived: read once per burst (a refill of the buffer).
    let mut burst_ns = 0;
    let mut completed = 0;
    // Whether the buffer holds the next frame whole; if not, reading it refills the buffer.
    let mut whole_frame_buffered = false;
    loop {
        // Borrowed: a reply's payload is not copied out of `buf`.
        let frame = match wire::read_payload(&mut reader, &mut buf)
            .and_then(|crc| wire::decode_payload::<ServerFrame<&[u8]>>(&buf, crc))
        {
            Ok(frame) => frame,
            Err(e) => {
                // The sender shuts the socket down once it is done; anything earlier is a failure.
                if window.now_ns() < window.end_ns {
                    window.fail(format!("connection lost: {e}"));
                }
                return tally;
            }
        };
        if !whole_frame_buffered {
            // This read brought in a new burst.
            burst_ns = window.now_ns();
        }
        let freed_now = match frame {
            ServerFrame::Reply { request_id, .. } => {
                let session = (request_id & mask) as usize;
                let done_ns = burst_ns;
                let flight = &flights[session];
                let (intended_ns, sent_ns) = (
                    flight.intended_ns.load(Ordering::Acquire),
                    flight.sent_ns.load(Ordering::Acquire),
                );
                completed += 1;
                if intended_ns >= window.start_ns && done_ns <= window.end_ns {
                    tally.recorder.record_ns(intended_ns, sent_ns, done_ns);
                }
                Some((session, false))
            }
            ServerFrame::Busy { request_id } => {
                tally.busy += 1;
                Some(((request_id & mask) as usize, true))
            }
            ServerFrame::Redirect {
                request_id,
                leader_addr,
                ..
            } => {
                tally.errors += 1;
                window.fail(format!("the leader changed during the run (redirected to {leader_addr:?}); rerun, or look at the replica logs"));
                Some(((request_id & mask) as usize, false))
            }
            ServerFrame::Error { code, message } => {
                window.fail(format!("replica refused a request: {code:?}: {message}"));
                return tally;
            }
            _ => None,
        };
        batch.extend(freed_now);
        // What is buffered holds no whole frame: the next frame needs a read, which may wait, so
        // hand the burst over first.
        whole_frame_buffered = holds_whole_frame(reader.buffer());
        if !whole_frame_buffered {
            window
                .completed
                .fetch_add(std::mem::take(&mut completed), Ordering::Relaxed);
            // The next burst's list starts at this one's size: no regrowth per reply.
            let burst = batch.len();
            let sent = std::mem::replace(&mut batch, Vec::with_capacity(burst));
            if !sent.is_empty() && freed.send(sent).is_err() {
                return tally;
            }
        }
    }
}

/// The sending half of one connection. Its buffers are reused from request to request, so the
/// load generator does not allocate per operation (on a 2-core machine it shares the CPUs with
/// the cluster it measures).
struct ConnectionSender {
    writer: TcpStream,
    flights: Arc<Vec<InFlight>>,
    client_ids: Vec<u64>,
    seqs: Vec<u64>,
    value: Vec<u8>,
    keys: u64,
    buf: Vec<u8>,
    key: Vec<u8>,
    op: Vec<u8>,
    op_counter: u64,
}

impl ConnectionSender {
    /// Appends the request of `session` to the batch (a fresh seq unless `retry`).
    fn queue(&mut self, session: usize, retry: bool, intended_ns: u64, now_ns: u64) {
        if !retry {
            self.seqs[session] += 1;
            self.flights[session]
                .intended_ns
                .store(intended_ns, Ordering::Release);
        }
        self.flights[session]
            .sent_ns
            .store(now_ns, Ordering::Release);
        self.op_counter += 1;
        write_key(
            self.op_counter ^ self.client_ids[session],
            self.keys,
            &mut self.key,
        );
        let request_id = (self.seqs[session] << SESSION_BITS) | session as u64;
        let (client, seq) = (self.client_ids[session], self.seqs[session]);
        encode_put_request(
            (request_id, client, seq),
            (&self.key, &self.value),
            &mut self.op,
            &mut self.buf,
        );
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.writer.write_all(&self.buf);
        self.buf.clear();
        result
    }
}

fn connection(
    addr: &str,
    secret: &[u8],
    sessions: usize,
    index: usize,
    spec: &LoadSpec,
    window: Arc<Window>,
) -> Result<ReaderTally, String> {
    let stream = dial(addr, secret, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    let read_half = stream.try_clone().map_err(|e| e.to_string())?;
    let flights: Arc<Vec<InFlight>> = Arc::new(
        (0..sessions)
            .map(|_| InFlight {
                intended_ns: AtomicU64::new(0),
                sent_ns: AtomicU64::new(0),
            })
            .collect(),
    );
    let (freed_tx, freed_rx): (Sender<FreedBatch>, Receiver<FreedBatch>) = channel::unbounded();
    let reader = {
        let (flights, window) = (flights.clone(), window.clone());
        std::thread::spawn(move || reader_loop(read_half, flights, freed_tx, window))
    };
    let mut sender = ConnectionSender {
        writer: stream,
        flights,
        client_ids: (0..sessions).map(|_| random_u64()).collect(),
        seqs: vec![0; sessions],
        value: vec![b'x'; spec.payload_bytes],
        keys: spec.keys,
        buf: Vec::with_capacity(64 << 10),
        key: Vec::new(),
        op: Vec::new(),
        op_counter: 0,
    };
    let mut idle: Vec<usize> = (0..sessions).collect();
    let mut schedule = match spec.arrival {
        Arrival::Open { rate_per_s } => Some(Schedule::new(
            window.base,
            rate_per_s,
            index,
            spec.connections,
        )),
        Arrival::Closed => None,
    };
    let mut next_intended_ns = schedule
        .as_mut()
        .map(|s| s.next_intended().duration_since(window.base).as_nanos() as u64);
    if schedule.is_some() {
        precise_timers();
    }
    let mut freed: Vec<Freed> = Vec::new();
    while window.now_ns() < window.end_ns && !window.failed() {
        // Take back what the reader freed; resend busy ones at once (same seq, same intended time).
        let until_next =
            next_intended_ns.map(|at| Duration::from_nanos(at.saturating_sub(window.now_ns())));
        let wait = sender_wait(!idle.is_empty(), until_next);
        if wait.is_zero() && until_next.is_some_and(|until| !until.is_zero()) {
            // The last stretch before an intended start is polled; yielding lets a runnable
            // thread (the cluster's, on a small host) have the CPU meanwhile.
            std::thread::yield_now();
        }
        if let Ok(first) = freed_rx.recv_timeout(wait) {
            freed.extend(first);
            freed.extend(freed_rx.try_iter().flatten());
        }
        let now_ns = window.now_ns();
        let mut any_retry = false;
        for (session, retry) in freed.drain(..) {
            if retry {
                any_retry = true;
                sender.queue(session, true, 0, now_ns);
            } else {
                idle.push(session);
            }
        }
        match next_intended_ns.as_mut() {
            None => {
                for session in idle.drain(..) {
                    sender.queue(session, false, now_ns, now_ns);
                }
            }
            Some(intended_ns) => {
                // Everything due goes out now; a request with no idle session waits, and that
                // wait counts in its latency (measured from the intended time).
                while *intended_ns <= now_ns && !idle.is_empty() {
                    let session = idle.pop().expect("checked non-empty");
                    sender.queue(session, false, *intended_ns, now_ns);
                    *intended_ns = schedule
                        .as_mut()
                        .expect("open loop")
                        .next_intended()
                        .duration_since(window.base)
                        .as_nanos() as u64;
                }
            }
        }
        if any_retry {
            std::thread::sleep(Duration::from_micros(50));
        }
        if !sender.buf.is_empty() {
            sender
                .flush()
                .map_err(|e| format!("sending to {addr}: {e}"))?;
        }
    }
    // Let requests in flight finish (they are outside the window), then close.
    let drain_deadline = Instant::now() + Duration::from_secs(5);
    while idle.len() < sessions && Instant::now() < drain_deadline {
        if let Ok(batch) = freed_rx.recv_timeout(Duration::from_millis(10)) {
            idle.extend(batch.into_iter().map(|(session, _)| session));
        }
    }
    if idle.len() < sessions && !window.failed() {
        window.fail(format!(
            "{} of {sessions} sessions on a connection to {addr} got no answer within 5 s of the end",
            sessions - idle.len()
        ));
    }
    let _ = sender.writer.shutdown(Shutdown::Both);
    Ok(reader.join().expect("decree reader thread panicked"))
}

/// Appends the framed request putting `value` at `key` for (request id, client, seq) to `out`,
/// encoding the operation in `op` (both buffers reused: no allocation once warm). Byte strings go
/// as `serde_bytes`, which serializes them whole and alike to the owned `Bytes` a server decodes.
fn encode_put_request(
    (request_id, client, seq): (u64, u64, u64),
    (key, value): (&[u8], &[u8]),
    op: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    KvOp::Put {
        key: serde_bytes::Bytes::new(key),
        value: serde_bytes::Bytes::new(value),
    }
    .encode_into(op);
    let op = serde_bytes::Bytes::new(op);
    wire::encode(
        &ClientFrame::Request {
            request_id,
            client,
            seq,
            op,
        },
        out,
    );
}

/// Whether `buffered` starts with a whole frame (header and payload).
fn holds_whole_frame(buffered: &[u8]) -> bool {
    let Some(header) = buffered.first_chunk::<{ wire::CLIENT_HEADER_BYTES }>() else {
        return false;
    };
    // A header that does not decode fails the next read anyway: hand over what is freed first.
    wire::decode_header(header)
        .is_ok_and(|(len, _)| buffered.len() >= wire::CLIENT_HEADER_BYTES + len)
}

/// Most sessions on one connection: a replica drops answers to a connection whose unsent backlog
/// reaches `WRITE_BACKLOG_LIMIT_BYTES`, and this many answers (a put's is about 30 bytes) stay
/// far below it even when none has been read yet.
pub const MAX_SESSIONS_PER_CONNECTION_BACKLOG: usize = WRITE_BACKLOG_LIMIT_BYTES / 64;

/// Splits `clients` sessions over `connections` as evenly as possible, opening more connections
/// when one would carry more than `MAX_SESSIONS_PER_CONNECTION_BACKLOG`.
pub fn sessions_per_connection(clients: usize, connections: usize) -> Vec<usize> {
    let connections = connections
        .max(clients.div_ceil(MAX_SESSIONS_PER_CONNECTION_BACKLOG))
        .clamp(1, clients.max(1));
    (0..connections)
        .map(|i| clients / connections + usize::from(i < clients % connections))
        .collect()
}

/// Runs `spec` against the leader at `addr`.
pub fn run(
    addr: &str,
    secret: &[u8],
    spec: &LoadSpec,
    label: &str,
) -> Result<LoadOutcome, BenchError> {
    let base = Instant::now();
    let start_ns = spec.warmup.as_nanos() as u64;
    let end_ns = start_ns + spec.duration.as_nanos() as u64;
    let completed = Arc::new(AtomicU64::new(0));
    let window = Arc::new(Window {
        base,
        start_ns,
        end_ns,
        completed: completed.clone(),
        failure: Mutex::new(None),
    });
    let _progress = Progress::start(
        label.to_string(),
        completed,
        spec.warmup + spec.duration,
        spec.progress,
    );
    let split = sessions_per_connection(spec.clients, spec.connections);
    let mut spec_used = spec.clone();
    spec_used.connections = split.len();
    let threads: Vec<_> = split
        .into_iter()
        .enumerate()
        .map(|(index, sessions)| {
            let (addr, secret, spec, window) = (
                addr.to_string(),
                secret.to_vec(),
                spec_used.clone(),
                window.clone(),
            );
            std::thread::spawn(move || connection(&addr, &secret, sessions, index, &spec, window))
        })
        .collect();
    let mut tallies = Vec::new();
    for thread in threads {
        match thread.join().expect("decree connection thread panicked") {
            Ok(tally) => tallies.push(tally),
            Err(e) => window.fail(e),
        }
    }
    if let Some(why) = window.failure.lock().expect("failure lock").take() {
        return Err(BenchError::Load(why));
    }
    let errors = tallies.iter().map(|t| t.errors).sum();
    let busy = tallies.iter().map(|t| t.busy).sum();
    let outcome = LoadOutcome::merge(
        tallies.iter().map(|t| &t.recorder),
        errors,
        busy,
        spec.duration.as_secs_f64(),
    );
    if outcome.ops == 0 {
        return Err(BenchError::Load(format!(
            "no operation completed in the {} s window",
            spec.duration.as_secs_f64()
        )));
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn a_request_built_in_reused_buffers_reads_back_as_the_owned_request() {
        let (mut op, mut out) = (vec![1; 300], Vec::new());
        encode_put_request(
            (9, 8, 7),
            (b"bench-00000042", &[b'x'; 64]),
            &mut op,
            &mut out,
        );
        encode_put_request((10, 8, 8), (b"k", b"v"), &mut op, &mut out);
        let mut reader = out.as_slice();
        let mut buf = Vec::new();
        for (request_id, seq, key, value) in [
            (9, 7, &b"bench-00000042"[..], &[b'x'; 64][..]),
            (10, 8, b"k", b"v"),
        ] {
            let frame: ClientFrame = wire::read_frame(&mut reader, &mut buf).unwrap();
            let op = KvOp::Put {
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
            };
            assert_eq!(
                frame,
                ClientFrame::Request {
                    request_id,
                    client: 8,
                    seq,
                    op: op.encode()
                }
            );
        }
        assert!(reader.is_empty());
    }

    #[test]
    fn a_buffer_holds_a_whole_frame_only_with_all_its_payload() {
        let mut frame = Vec::new();
        wire::encode(
            &ServerFrame::Reply {
                request_id: 1,
                seq: 1,
                payload: serde_bytes::Bytes::new(b"done"),
            },
            &mut frame,
        );
        assert!(holds_whole_frame(&frame));
        assert!(!holds_whole_frame(&frame[..frame.len() - 1]));
        assert!(!holds_whole_frame(&frame[..wire::CLIENT_HEADER_BYTES - 1]));
        assert!(!holds_whole_frame(&[]));
        let mut two = frame.clone();
        two.extend_from_slice(&frame[..3]);
        assert!(holds_whole_frame(&two));
    }

    #[test]
    fn sessions_split_evenly_and_never_exceed_clients() {
        assert_eq!(sessions_per_connection(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(
            sessions_per_connection(2, 8),
            vec![1, 1],
            "no connection without a session"
        );
        assert_eq!(sessions_per_connection(64, 1), vec![64]);
        let many = sessions_per_connection(3 * MAX_SESSIONS_PER_CONNECTION_BACKLOG + 1, 1);
        assert_eq!(
            many.len(),
            4,
            "no connection carries more than the backlog allows"
        );
        assert!(many
            .iter()
            .all(|&s| s <= MAX_SESSIONS_PER_CONNECTION_BACKLOG));
        assert_eq!(sessions_per_connection(7, 3).iter().sum::<usize>(), 7);
    }
}
