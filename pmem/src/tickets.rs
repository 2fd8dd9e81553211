//! Maps the core's persist tickets to log positions: a ticket is durable once the log's durable
//! position reaches the end of its write. Tickets complete in FIFO order, as the core expects.

use std::collections::VecDeque;

/// Tickets staged but not yet reported durable.
#[derive(Debug, Default)]
pub struct Tickets {
    pending: VecDeque<(u64, u64)>,
}

impl Tickets {
    /// Records that `ticket`'s write ends at `end_lsn`. Tickets must rise.
    pub fn staged(&mut self, ticket: u64, end_lsn: u64) {
        if let Some(&(last, last_end)) = self.pending.back() {
            assert!(ticket > last && end_lsn >= last_end, "tickets: rise in FIFO order");
        }
        self.pending.push_back((ticket, end_lsn));
    }

    /// The highest ticket made durable by `durable_lsn`, if any became durable since last asked.
    pub fn completed(&mut self, durable_lsn: u64) -> Option<u64> {
        let mut upto = None;
        while let Some(&(ticket, end)) = self.pending.front() {
            if end > durable_lsn {
                break;
            }
            upto = Some(ticket);
            self.pending.pop_front();
        }
        upto
    }

    /// Tickets not yet durable.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_in_order_up_to_the_durable_position() {
        let mut t = Tickets::default();
        t.staged(1, 100);
        t.staged(2, 200);
        t.staged(3, 300);
        assert_eq!(t.completed(99), None);
        assert_eq!(t.completed(250), Some(2));
        assert_eq!(t.outstanding(), 1);
        assert_eq!(t.completed(250), None);
        assert_eq!(t.completed(300), Some(3));
    }
}
