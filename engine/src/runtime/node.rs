//! Starts one replica's runtime threads (core, persistence) on their CPUs and stops them.

use super::driver::{CheckpointPolicy, Driver};
use super::event::Responder;
use super::idle::Idler;
use super::observer::Observer;
use super::persistence::{self, Persister};
use super::read_only::ReadOnly;
use super::placement::{Placement, Role};
use super::inbox::Inbox;
use super::shared::Shared;
use super::storage::LogStorage;
use super::transport::PeerTransport;
use crate::applier::Applier;
use crate::core::{CoreConfig, Replica};
use crate::durable::Durable;
use crate::state_machine::StateMachine;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Runtime tunables.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The protocol core's configuration.
    pub core: CoreConfig,
    /// CPU per role.
    pub placement: Placement,
    /// How often the core gets `Input::Tick`.
    pub tick_ms: u64,
    /// Inbox ring slots (events from sockets and persistence).
    pub inbox_capacity: usize,
    /// Persist ring slots.
    pub persist_capacity: usize,
    /// Busy-wait iterations before an idle thread yields, then parks.
    pub spin_iterations: u32,
    /// `yield_now` calls after spinning, before an idle thread parks.
    pub yield_iterations: u32,
    /// Take a checkpoint (and let the log discard below it) every this many applied slots; 0 never.
    pub checkpoint_every_slots: u64,
    /// Threads that deliver events run the core themselves when it is free (`inbox` module docs).
    pub run_core_on_delivery: bool,
    /// While this replica is a spare its leader does not await (`Replica::may_sync_late`), its
    /// syncs wait this long to group more writes (`persistence` module docs). Zero: syncs as soon
    /// as any replica does. The leader's side is `CoreConfig::spare_lag_ms`.
    pub spare_sync_delay: Duration,
}

impl NodeConfig {
    /// Defaults around `core`; the idle budget suits this host's CPU count (`idle::default_budget`),
    /// and where idle threads park rather than spin, producers run the core on delivery.
    pub fn new(core: CoreConfig) -> Self {
        let (spin_iterations, yield_iterations) = super::idle::default_budget(super::placement::available_cpus());
        NodeConfig {
            core,
            placement: Placement::default(),
            tick_ms: 5,
            inbox_capacity: 65_536,
            persist_capacity: 16_384,
            spin_iterations,
            yield_iterations,
            checkpoint_every_slots: 10_000,
            run_core_on_delivery: spin_iterations == 0,
            spare_sync_delay: Duration::ZERO,
        }
    }
}

/// A running replica runtime.
pub struct Node<R> {
    /// Where sockets push events for the core thread.
    pub inbox: Arc<Inbox<R>>,
    /// Shutdown/failure flags and gauges.
    pub shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl<R: Responder> Node<R> {
    /// Creates the inbox so transports can be wired to it before `start`.
    pub fn inbox(config: &NodeConfig) -> Arc<Inbox<R>> {
        Arc::new(Inbox::new(config.inbox_capacity, config.run_core_on_delivery))
    }

    /// Recovers the core from `durable` and starts the core and persistence threads.
    #[allow(clippy::too_many_arguments)]
    pub fn start<S, T, L, O>(
        config: NodeConfig,
        inbox: Arc<Inbox<R>>,
        durable: Durable,
        state_machine: S,
        transport: T,
        storage: L,
        observer: Arc<O>,
    ) -> std::io::Result<Node<R>>
    where
        S: StateMachine + ReadOnly + Send + 'static,
        T: PeerTransport,
        L: LogStorage,
        O: Observer,
    {
        let shared = Arc::new(Shared::default());
        shared.log_bytes.store(storage.size_bytes(), Ordering::Relaxed);
        shared.log_capacity_bytes.store(storage.capacity_bytes().unwrap_or(0), Ordering::Relaxed);
        let checkpoint_writer = storage.checkpoint_writer();
        let persister = Arc::new(Persister::new(storage, config.persist_capacity, shared.clone(), observer.clone(), config.spare_sync_delay));
        // The applier starts from the same checkpoint the core recovers (or from scratch).
        let applier = match durable.checkpoint() {
            Some(checkpoint) => Applier::from_checkpoint(state_machine, checkpoint)
                .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("stored checkpoint does not load: {why}")))?,
            None => Applier::new(state_machine, config.core.membership.clone()),
        };
        let core = Replica::recover(config.core.clone(), durable);
        let mut threads = Vec::new();
        {
            let (persister, inbox, placement) = (persister.clone(), inbox.clone(), config.placement.clone());
            let idler = Idler::new(config.spin_iterations, config.yield_iterations);
            threads.push(std::thread::Builder::new().name("decree-persist".into()).spawn(move || {
                placement.pin_current(Role::Persistence);
                persistence::run(persister, inbox, idler);
            })?);
        }
        {
            let driver = Driver::new(
                core,
                applier,
                transport,
                persister,
                inbox.clone(),
                shared.clone(),
                observer,
                config.tick_ms,
                CheckpointPolicy {
                    every_slots: config.checkpoint_every_slots,
                    retain_slots: config.core.checkpoint_retain_slots,
                    writer: checkpoint_writer,
                },
            );
            inbox.install(Box::new(driver));
            let (placement, inbox, shared) = (config.placement.clone(), inbox.clone(), shared.clone());
            let idler = Idler::new(config.spin_iterations, config.yield_iterations);
            threads.push(std::thread::Builder::new().name("decree-core".into()).spawn(move || {
                placement.pin_current(Role::Core);
                inbox.run_core_thread(&shared, idler);
            })?);
        }
        Ok(Node { inbox, shared, threads })
    }

    /// Whether the log failed (the replica must exit for repair).
    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Stops the core thread, lets persistence sync what it holds, and joins both.
    pub fn shutdown(self) {
        self.shared.stop.store(true, Ordering::Release);
        for thread in &self.threads {
            thread.thread().unpark();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
