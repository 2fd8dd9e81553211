//! Encodes a core-thread `Response` as a client `ServerFrame` without building one: the same
//! postcard layout, but borrowing the leader's address from the member table and the detail text
//! from the response, so a reply, redirect or busy answer costs no allocation (the bytes go
//! straight into the connection's write buffer).

use super::session::status_view;
use crate::wire::{self, ErrorCode, StatusView};
use bytes::Bytes;
use decree_engine::runtime::Response;
use serde::Serialize;
use std::collections::HashMap;

/// `wire::ServerFrame` with borrowed fields. Variant order and field order are the wire format:
/// they must stay those of `ServerFrame` (postcard names neither; the tests compare the bytes).
#[derive(Serialize)]
enum ServerFrameRef<'a> {
    Reply { request_id: u64, seq: u64, payload: &'a Bytes },
    Redirect { request_id: u64, leader: Option<u32>, leader_addr: Option<&'a str> },
    Busy { request_id: u64 },
    Status { request_id: u64, status: &'a StatusView },
    Admin { request_id: u64, ok: bool, detail: &'a str, leader_addr: Option<&'a str>, slot: Option<u64> },
    Error { code: ErrorCode, message: &'a str },
}

/// Appends the frame answering `request_id` with `response` to `out`. Allocates only for a
/// `Status` answer (its voter lists), and when `out` lacks the capacity.
pub fn encode_response(request_id: u64, response: &Response, members: &HashMap<u32, String>, out: &mut Vec<u8>) {
    let address =
        |leader: Option<decree_engine::types::ReplicaId>| leader.and_then(|l| members.get(&l.0)).map(String::as_str);
    match response {
        Response::Reply { seq, payload } => {
            if let Err(error) = wire::try_encode(&ServerFrameRef::Reply { request_id, seq: *seq, payload }, out) {
                // Not sendable in one frame: the client learns why instead of the I/O thread dying.
                encode_error(
                    ErrorCode::Oversize,
                    &format!("the reply to request {request_id} is too large: {error}"),
                    out,
                );
            }
        }
        Response::Redirect { leader } => wire::encode(
            &ServerFrameRef::Redirect { request_id, leader: leader.map(|l| l.0), leader_addr: address(*leader) },
            out,
        ),
        Response::Busy => wire::encode(&ServerFrameRef::Busy { request_id }, out),
        Response::Status(status) => {
            wire::encode(&ServerFrameRef::Status { request_id, status: &status_view(status) }, out);
        }
        Response::Admin { ok, detail, leader, slot } => wire::encode(
            &ServerFrameRef::Admin { request_id, ok: *ok, detail, leader_addr: address(*leader), slot: *slot },
            out,
        ),
    }
}

/// Appends an `Error` frame (the connection is closed after it).
pub fn encode_error(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
    wire::encode(&ServerFrameRef::Error { code, message }, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ServerFrame;
    use decree_engine::types::ReplicaId;

    fn owned(bytes: &[u8]) -> ServerFrame {
        wire::read_frame(&mut &bytes[..], &mut Vec::new()).expect("a server frame")
    }

    #[test]
    fn borrowed_frames_are_byte_identical_to_server_frames() {
        let members: HashMap<u32, String> = [(2, "10.0.0.2:7000".to_string())].into();
        let voters = vec![ReplicaId(0), ReplicaId(1), ReplicaId(2)];
        let status = decree_engine::runtime::NodeStatus {
            core: decree_engine::core::Status {
                id: ReplicaId(1),
                promised: decree_engine::types::Ballot::new(3, ReplicaId(2)),
                leading: false,
                leader: Some(ReplicaId(2)),
                commit: 40,
                applied: 39,
                log_end: 42,
                membership: decree_engine::membership::Membership::new(voters),
            },
            executed: 1_000,
            log_bytes: 65_536,
        };
        let cases = [
            (
                Response::Reply { seq: 9, payload: Bytes::from_static(b"value") },
                ServerFrame::Reply { request_id: 5, seq: 9, payload: Bytes::from_static(b"value") },
            ),
            (
                Response::Redirect { leader: Some(ReplicaId(2)) },
                ServerFrame::Redirect { request_id: 5, leader: Some(2), leader_addr: Some("10.0.0.2:7000".into()) },
            ),
            (
                Response::Redirect { leader: Some(ReplicaId(3)) },
                ServerFrame::Redirect { request_id: 5, leader: Some(3), leader_addr: None },
            ),
            (Response::Busy, ServerFrame::Busy { request_id: 5 }),
            (
                Response::Admin { ok: false, detail: "not leader".into(), leader: Some(ReplicaId(2)), slot: Some(4) },
                ServerFrame::Admin {
                    request_id: 5,
                    ok: false,
                    detail: "not leader".into(),
                    leader_addr: Some("10.0.0.2:7000".into()),
                    slot: Some(4),
                },
            ),
            (
                Response::Status(Box::new(status.clone())),
                ServerFrame::Status { request_id: 5, status: status_view(&status) },
            ),
        ];
        for (response, expected) in cases {
            let mut ours = Vec::new();
            encode_response(5, &response, &members, &mut ours);
            let mut theirs = Vec::new();
            wire::encode(&expected, &mut theirs);
            assert_eq!(ours, theirs, "{expected:?}");
            assert_eq!(owned(&ours), expected);
        }
        let mut ours = Vec::new();
        encode_error(ErrorCode::Oversize, "too big", &mut ours);
        let mut theirs = Vec::new();
        wire::encode(&ServerFrame::<Bytes>::Error { code: ErrorCode::Oversize, message: "too big".into() }, &mut theirs);
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_reply_too_large_for_one_frame_becomes_an_error_frame_not_a_panic() {
        // A value that fit its request (small ids) but not the reply (ten-byte ids).
        let payload = Bytes::from(vec![7u8; wire::MAX_CLIENT_PAYLOAD_BYTES - 8]);
        let mut out = b"earlier".to_vec();
        encode_response(u64::MAX, &Response::Reply { seq: u64::MAX, payload }, &HashMap::new(), &mut out);
        assert_eq!(&out[..7], b"earlier", "bytes already queued are kept");
        assert!(matches!(owned(&out[7..]), ServerFrame::Error { code: ErrorCode::Oversize, .. }));
    }
}
