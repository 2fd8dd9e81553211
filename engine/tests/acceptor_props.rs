//! Property test of the handlers' contracts: any sequence of prepares, accepts, heartbeats, ticks,
//! proposals and storage completions keeps every contract (they panic otherwise), never lets the
//! promise fall, and never acknowledges what is not yet durable.

use decree_engine::core::{Command, CoreConfig, DurableWrite, Input, Replica};
use decree_engine::durable::Durable;
use decree_engine::message::*;
use decree_engine::types::*;
use proptest::prelude::*;
use decree_engine::batch::Batch;

#[derive(Clone, Debug)]
enum Step {
    Prepare { round: u64, from: u32, from_slot: u64 },
    Accept { round: u64, from: u32, start: u64, count: u64, commit: u64 },
    Heartbeat { round: u64, from: u32, commit: u64 },
    Tick { advance_ms: u64 },
    Propose,
    CompleteOne,
    CompleteAll,
}

fn step() -> impl Strategy<Value = Step> {
    let peer = prop_oneof![Just(0u32), Just(2u32)];
    prop_oneof![
        (1u64..6, peer.clone(), 0u64..6).prop_map(|(round, from, from_slot)| Step::Prepare { round, from, from_slot }),
        (1u64..6, peer.clone(), 0u64..8, 0u64..4, 0u64..10)
            .prop_map(|(round, from, start, count, commit)| Step::Accept { round, from, start, count, commit }),
        (1u64..6, peer, 0u64..10).prop_map(|(round, from, commit)| Step::Heartbeat { round, from, commit }),
        (1u64..400).prop_map(|advance_ms| Step::Tick { advance_ms }),
        Just(Step::Propose),
        Just(Step::CompleteOne),
        Just(Step::CompleteAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn handler_contracts_hold_and_nothing_is_acknowledged_before_it_is_durable(steps in prop::collection::vec(step(), 1..80)) {
        let voters = (0..3).map(ReplicaId).collect();
        let mut replica = Replica::new(CoreConfig::new(ReplicaId(1), voters));
        let mut durable = Durable::default();
        let mut queued: std::collections::VecDeque<(u64, DurableWrite)> = Default::default();
        let mut now_ms = 0;
        let mut promised = Ballot::ZERO;
        let mut out = Vec::new();
        for step in steps {
            let input = match step {
                Step::Prepare { round, from, from_slot } => envelope(from, Message::Prepare(Prepare { ballot: Ballot::new(round, ReplicaId(from)), from_slot, transfer: false })),
                Step::Accept { round, from, start, count, commit } => {
                    // Peers behave like correct leaders: whatever the ballot, a slot's value is the same
                    // (a chosen value never changes), so any contract that fires is the replica's fault.
                    let values = (0..count).map(|i| Value::Batch(Batch::from_requests(&[Request { client: ClientId(1), seq: start + i, op: Default::default() }]))).collect();
                    envelope(from, Message::Accept(Accept { ballot: Ballot::new(round, ReplicaId(from)), start, values, commit, awaited: true }))
                }
                Step::Heartbeat { round, from, commit } => envelope(from, Message::Heartbeat(Heartbeat { ballot: Ballot::new(round, ReplicaId(from)), commit, round: 0 })),
                Step::Tick { advance_ms } => { now_ms += advance_ms; Input::Tick }
                Step::Propose => Input::Propose(vec![Request { client: ClientId(9), seq: now_ms, op: Default::default() }]),
                Step::CompleteOne | Step::CompleteAll => {
                    let count = if matches!(step, Step::CompleteOne) { 1 } else { queued.len() };
                    let mut upto = None;
                    for _ in 0..count.min(queued.len()) {
                        let (ticket, write) = queued.pop_front().unwrap();
                        durable.apply(&write).unwrap();
                        upto = Some(ticket);
                    }
                    match upto { Some(upto) => Input::Persisted { upto }, None => continue }
                }
            };
            replica.step(now_ms, input, &mut out);
            for command in out.drain(..) {
                match command {
                    Command::Persist { ticket, write } => queued.push_back((ticket, write)),
                    Command::Send(Envelope { msg: Message::Promise(p), .. }) => {
                        prop_assert!(durable.promised() >= p.ballot, "promise for {} sent before it was durable", p.ballot);
                    }
                    Command::Send(Envelope { msg: Message::Accepted(a), .. }) => {
                        prop_assert!(durable.promised() >= a.ballot, "accepted at {} before that ballot was durable", a.ballot);
                        prop_assert!(durable.entry_count() as u64 >= a.upto, "acknowledged up to {} with only {} durable slots", a.upto, durable.entry_count());
                    }
                    _ => {}
                }
            }
            let status = replica.status();
            prop_assert!(status.promised >= promised, "promise fell from {} to {}", promised, status.promised);
            promised = status.promised;
            prop_assert!(status.applied <= status.commit && status.commit <= status.log_end);
        }
    }
}

fn envelope(from: u32, msg: Message) -> Input {
    Input::Receive(Envelope { from: ReplicaId(from), to: ReplicaId(1), msg })
}
