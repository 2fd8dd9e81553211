//! A follower's fence over its leaders' connections: which one may write into its region. One
//! thread owns it (the follower's polling thread), so it needs no lock: connections admitted on
//! another thread arrive with no write access and are `adopt`ed here, and only `adopt` and
//! `grant` ever allow a write. The rdma follower keeps its queue pairs in one; it lives outside
//! the `rdma` feature so its order (revoke before grant, nobody but the granted leader) is tested
//! without a device.

use crate::{LeaderToken, VerbsError};

/// What the fence needs of a leader's connection (an RC queue pair for rdma).
pub trait Writer {
    /// The leader it belongs to.
    fn token(&self) -> LeaderToken;
    /// Allows or refuses the leader's one-sided writes from now on.
    fn set_writable(&self, writable: bool) -> Result<(), VerbsError>;
    /// Makes the connection refuse everything from now on (a QP in the error state).
    fn break_connection(&self) -> Result<(), VerbsError>;
}

/// The granted leader and every adopted connection.
pub struct Fence<W> {
    granted: LeaderToken,
    writers: Vec<W>,
}

impl<W: Writer> Fence<W> {
    /// Nobody granted, no connection; room for `capacity` connections before the list grows.
    pub fn with_capacity(capacity: usize) -> Fence<W> {
        Fence {
            granted: LeaderToken::NONE,
            writers: Vec::with_capacity(capacity),
        }
    }

    /// The leader whose connections may write.
    pub fn granted(&self) -> LeaderToken {
        self.granted
    }

    /// Whether `token`'s connections may write.
    fn may_write(&self, token: LeaderToken) -> bool {
        token == self.granted && token != LeaderToken::NONE
    }

    /// The adopted connections.
    pub fn writers(&self) -> &[W] {
        &self.writers
    }

    /// The adopted connections, to use them (their write access is the fence's business).
    pub fn writers_mut(&mut self) -> &mut [W] {
        &mut self.writers
    }

    /// Forgets connection `index` (its leader went away); order is not kept.
    pub fn remove(&mut self, index: usize) -> W {
        self.writers.swap_remove(index)
    }

    /// Takes in a connection admitted with no write access, giving it the access its leader has
    /// now. A connection that cannot take it (already in error: its leader wrote before it was
    /// adopted and was refused) is handed back with the error, to be dropped: its leader
    /// reconnects.
    pub fn adopt(&mut self, writer: W) -> Result<(), (W, VerbsError)> {
        if let Err(e) = writer.set_writable(self.may_write(writer.token())) {
            return Err((writer, e));
        }
        self.writers.push(writer);
        Ok(())
    }

    /// Moves the write permission to `leader`: every other leader's connections lose it first,
    /// then `leader`'s gain it, so there are never two writers. A connection that refuses to lose
    /// it is broken instead, and dropped if even that fails; one that cannot gain it (in error)
    /// is dropped, and its leader reconnects.
    pub fn grant(&mut self, leader: LeaderToken) {
        self.writers.retain(|w| w.token() == leader || revoke(w));
        self.granted = leader;
        if leader == LeaderToken::NONE {
            return;
        }
        self.writers.retain(|w| {
            if w.token() != leader {
                return true;
            }
            match w.set_writable(true) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(token = leader.0, error = %e, "granting write access failed (connection in error); dropping it, the leader must reconnect");
                    false
                }
            }
        });
    }
}

/// Takes `w`'s write access away, or breaks it; false when neither worked (drop it).
fn revoke<W: Writer>(w: &W) -> bool {
    let Err(e) = w.set_writable(false) else {
        return true;
    };
    tracing::warn!(token = w.token().0, error = %e, "revoking write access failed; breaking the connection instead");
    match w.break_connection() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(token = w.token().0, error = %e, "breaking the connection failed too; dropping it");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::rc::Rc;

    /// What the fake connections did, in order, and which may write now (by connection id).
    #[derive(Default)]
    struct World {
        writable: BTreeSet<(u64, u32)>,
        broken: BTreeSet<u32>,
        /// Most distinct leaders that could write at one moment.
        most_writers: usize,
    }

    impl World {
        fn writing_leaders(&self) -> BTreeSet<u64> {
            self.writable
                .iter()
                .filter(|(_, id)| !self.broken.contains(id))
                .map(|(t, _)| *t)
                .collect()
        }
    }

    struct Fake {
        token: LeaderToken,
        id: u32,
        /// Refuses any access change (a QP already in error).
        in_error: bool,
        /// Refuses to be broken too.
        unbreakable: bool,
        world: Rc<RefCell<World>>,
    }

    fn refused() -> VerbsError {
        VerbsError::Config("fake: QP in error".into())
    }

    impl Writer for Fake {
        fn token(&self) -> LeaderToken {
            self.token
        }
        fn set_writable(&self, writable: bool) -> Result<(), VerbsError> {
            if self.in_error {
                return Err(refused());
            }
            let mut w = self.world.borrow_mut();
            if writable {
                w.writable.insert((self.token.0, self.id));
            } else {
                w.writable.remove(&(self.token.0, self.id));
            }
            w.most_writers = w.most_writers.max(w.writing_leaders().len());
            Ok(())
        }
        fn break_connection(&self) -> Result<(), VerbsError> {
            if self.unbreakable {
                return Err(refused());
            }
            self.world.borrow_mut().broken.insert(self.id);
            Ok(())
        }
    }

    fn fake(world: &Rc<RefCell<World>>, token: u64, id: u32) -> Fake {
        Fake {
            token: LeaderToken(token),
            id,
            in_error: false,
            unbreakable: false,
            world: world.clone(),
        }
    }

    #[test]
    fn adoption_gives_write_access_to_the_granted_leader_only() {
        let world = Rc::new(RefCell::new(World::default()));
        let mut fence = Fence::with_capacity(4);
        fence.adopt(fake(&world, 1, 0)).ok().unwrap();
        assert!(world.borrow().writable.is_empty(), "nobody granted yet");
        fence.grant(LeaderToken(1));
        fence.adopt(fake(&world, 1, 1)).ok().unwrap(); // the granted leader reconnected
        fence.adopt(fake(&world, 2, 2)).ok().unwrap();
        assert_eq!(
            world.borrow().writing_leaders(),
            BTreeSet::from([1]),
            "adopted while 1 is granted"
        );
        assert_eq!(world.borrow().writable.len(), 2, "both of 1's connections");
        fence.grant(LeaderToken(2));
        assert_eq!(world.borrow().writing_leaders(), BTreeSet::from([2]));
        assert_eq!(world.borrow().most_writers, 1, "never two leaders at once");
        fence.grant(LeaderToken::NONE);
        assert!(
            world.borrow().writable.is_empty(),
            "granting nobody revokes all"
        );
        fence.adopt(fake(&world, 0, 3)).ok().unwrap();
        assert!(
            world.borrow().writable.is_empty(),
            "the empty token never writes"
        );
        assert_eq!(fence.writers().len(), 4);
    }

    #[test]
    fn a_connection_in_error_is_handed_back_at_adoption_and_dropped_at_grant() {
        let world = Rc::new(RefCell::new(World::default()));
        let mut fence = Fence::with_capacity(4);
        fence.grant(LeaderToken(1));
        let (back, _) = fence
            .adopt(Fake {
                in_error: true,
                ..fake(&world, 1, 0)
            })
            .expect_err("a QP in error cannot be adopted");
        assert_eq!(back.id, 0);
        assert!(fence.writers().is_empty());
        fence.adopt(fake(&world, 1, 1)).ok().unwrap();
        fence.writers.push(Fake {
            in_error: true,
            ..fake(&world, 2, 2)
        }); // went into error after adoption
        fence.writers.push(Fake {
            in_error: true,
            unbreakable: true,
            ..fake(&world, 3, 3)
        });
        fence.grant(LeaderToken(2));
        let ids: Vec<u32> = fence.writers().iter().map(|w| w.id).collect();
        assert_eq!(
            ids,
            vec![1],
            "2 cannot gain access, 3 can neither lose it nor break"
        );
        assert!(world.borrow().writable.is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Adopt { token: u64, in_error: bool },
        Grant(u64),
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..4, proptest::bool::weighted(0.2))
                .prop_map(|(token, in_error)| Op::Adopt { token, in_error }),
            (0u64..4).prop_map(Op::Grant),
            (0usize..8).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Whatever arrives and whatever is granted, at most one leader can write at any moment,
        /// and it is the granted one.
        #[test]
        fn only_the_granted_leader_ever_writes(ops in proptest::collection::vec(op(), 0..64)) {
            let world = Rc::new(RefCell::new(World::default()));
            let mut fence = Fence::with_capacity(4);
            for (id, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Adopt { token, in_error } => {
                        let _ = fence.adopt(Fake { in_error, ..fake(&world, token, id as u32) });
                    }
                    Op::Grant(token) => fence.grant(LeaderToken(token)),
                    Op::Remove(i) if i < fence.writers().len() => {
                        let gone = fence.remove(i);
                        world.borrow_mut().writable.remove(&(gone.token.0, gone.id));
                    }
                    Op::Remove(_) => {}
                }
                let writing = world.borrow().writing_leaders();
                prop_assert!(writing.len() <= 1, "two writers: {writing:?}");
                prop_assert!(writing.iter().all(|&t| t == fence.granted().0 && t != 0));
            }
            prop_assert!(world.borrow().most_writers <= 1);
        }
    }
}
