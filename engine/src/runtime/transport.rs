//! The replication seam: how the core thread's messages reach other replicas. Implementations:
//! tools' framed TCP (control + accept messages); verbs' one-sided paths can plug in behind it.

use crate::message::Envelope;

/// Sends messages to peers. Must not block the core thread: a full link may drop (Paxos retransmits
/// on the next heartbeat).
pub trait PeerTransport: Send + 'static {
    /// Queues `envelope` for `envelope.to`.
    fn send(&mut self, envelope: Envelope);
}

/// A transport chosen at run time (the replica server's `transport.kind`).
impl PeerTransport for Box<dyn PeerTransport> {
    fn send(&mut self, envelope: Envelope) {
        (**self).send(envelope)
    }
}
