//! One authenticated client connection: the reader turns frames into core-thread events; a writer
//! thread sends responses. A refused frame (malformed, oversize, unknown version) gets an error
//! frame and the connection is closed; other connections are untouched.

use super::Context;
use crate::wire::{self, ClientFrame, ErrorCode, ServerFrame, StatusView};
use crossbeam::channel::{self, Receiver, Sender};
use decree_engine::runtime::{Event, MembershipChange, Responder, Response};
use decree_engine::types::{ClientId, ReplicaId, Request};
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;

/// Responses queued per connection; a client that does not read loses the overflow.
const SESSION_QUEUE_FRAMES: usize = 4_096;

/// What the writer thread sends.
pub enum Outgoing {
    /// A response from the core thread.
    Response(u64, Response),
    /// Refuse the last frame, then close.
    Error(ErrorCode, String),
    /// Close the connection.
    Close,
}

/// Routes core-thread responses to one connection's writer.
#[derive(Clone)]
pub struct ConnResponder {
    tx: Sender<Outgoing>,
}

impl Responder for ConnResponder {
    fn respond(&self, request_id: u64, response: Response) {
        let _ = self.tx.try_send(Outgoing::Response(request_id, response));
    }
}

/// Serves a client on `stream` until it disconnects or sends a refused frame.
pub fn serve(stream: TcpStream, remote: String, ctx: Arc<Context>) {
    let (tx, rx) = channel::bounded(SESSION_QUEUE_FRAMES);
    let Ok(write_half) = stream.try_clone() else { return };
    let writer_ctx = ctx.clone();
    let writer = std::thread::Builder::new().name("decree-client-w".into()).spawn(move || writer(write_half, rx, &writer_ctx));
    if writer.is_err() {
        return;
    }
    let responder = ConnResponder { tx: tx.clone() };
    let mut reader = std::io::BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    loop {
        match wire::read_frame::<ClientFrame>(&mut reader, &mut buf) {
            Ok(ClientFrame::Request { request_id, client, seq, op }) => {
                let request = Request { client: ClientId(client), seq, op };
                let event = Event::Request { request, request_id, reply_to: responder.clone() };
                if ctx.inbox.push(event).is_err() {
                    responder.respond(request_id, Response::Busy);
                }
            }
            Ok(ClientFrame::TransferLeadership { request_id, to }) => {
                let event = Event::TransferLeadership { to: to.map(ReplicaId), request_id, reply_to: responder.clone() };
                if ctx.inbox.push(event).is_err() {
                    responder.respond(request_id, Response::Busy);
                }
            }
            Ok(ClientFrame::StaleRead { request_id, client, seq, op, min_slot }) => {
                let request = Request { client: ClientId(client), seq, op };
                let event = Event::FastRead { request, min_slot, request_id, reply_to: responder.clone() };
                if ctx.inbox.push(event).is_err() {
                    responder.respond(request_id, Response::Busy);
                }
            }
            Ok(ClientFrame::ChangeMembership { request_id, change }) => {
                let id = change.replica();
                // The leader must be able to reach a replica it adds: its address comes from this config.
                if !matches!(change, MembershipChange::Remove(_)) && !ctx.members.contains_key(&id.0) {
                    let detail = format!(
                        "replica {id} has no address in this replica's [[members]]; add it to every replica's config and restart them"
                    );
                    responder.respond(request_id, Response::Admin { ok: false, detail, leader: None, slot: None });
                    continue;
                }
                if ctx.inbox.push(Event::ChangeMembership { change, request_id, reply_to: responder.clone() }).is_err() {
                    responder.respond(request_id, Response::Busy);
                }
            }
            Ok(ClientFrame::Checkpoint { request_id }) => {
                if ctx.inbox.push(Event::Checkpoint { request_id, reply_to: responder.clone() }).is_err() {
                    responder.respond(request_id, Response::Busy);
                }
            }
            Ok(ClientFrame::Status { request_id }) => {
                if ctx.inbox.push(Event::Status { request_id, reply_to: responder.clone() }).is_err() {
                    responder.respond(request_id, Response::Busy);
                }
            }
            Err(error) => {
                if let Some(code) = error.code() {
                    tracing::warn!(%remote, %error, "refusing client frame; closing the connection");
                    let _ = tx.send(Outgoing::Error(code, error.to_string()));
                }
                let _ = tx.send(Outgoing::Close);
                return;
            }
        }
    }
}

fn status_view(status: &decree_engine::runtime::NodeStatus) -> StatusView {
    StatusView {
        id: status.core.id.0,
        leading: status.core.leading,
        leader: status.core.leader.map(|l| l.0),
        ballot: status.core.promised.to_string(),
        commit: status.core.commit,
        applied: status.core.applied,
        log_end: status.core.log_end,
        executed: status.executed,
        log_bytes: status.log_bytes,
        voters: status.core.membership.voters().iter().map(|v| v.0).collect(),
        learners: status.core.membership.learners().iter().map(|l| l.0).collect(),
    }
}

fn to_frame(request_id: u64, response: Response, ctx: &Context) -> ServerFrame {
    match response {
        Response::Reply { seq, payload } => ServerFrame::Reply { request_id, seq, payload },
        Response::Redirect { leader } => ServerFrame::Redirect {
            request_id,
            leader: leader.map(|l| l.0),
            leader_addr: leader.and_then(|l| ctx.members.get(&l.0).cloned()),
        },
        Response::Busy => ServerFrame::Busy { request_id },
        Response::Status(status) => ServerFrame::Status { request_id, status: status_view(&status) },
        Response::Admin { ok, detail, leader, slot } => ServerFrame::Admin {
            request_id,
            ok,
            detail,
            leader_addr: leader.and_then(|l| ctx.members.get(&l.0).cloned()),
            slot,
        },
    }
}

fn writer(mut stream: TcpStream, rx: Receiver<Outgoing>, ctx: &Context) {
    let mut buf = Vec::with_capacity(64 << 10);
    while let Ok(first) = rx.recv() {
        buf.clear();
        let mut next = Some(first);
        let mut close = false;
        while let Some(item) = next.take() {
            match item {
                Outgoing::Response(id, response) => wire::encode(&to_frame(id, response, ctx), &mut buf),
                Outgoing::Error(code, message) => wire::encode(&ServerFrame::Error { code, message }, &mut buf),
                Outgoing::Close => close = true,
            }
            if close || buf.len() > (1 << 20) {
                break;
            }
            next = rx.try_recv().ok();
        }
        if stream.write_all(&buf).is_err() || close {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}
