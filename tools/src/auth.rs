//! Mutual challenge-response authentication with the cluster secret (HMAC-SHA256), run on every TCP
//! connection before any protocol byte is read:
//!
//! ```text
//! server -> "DAUTHv01" || server_nonce[32]
//! client -> kind u8 || id u32 || client_nonce[32] || HMAC(k, "decree-client" || sn || cn || kind || id)
//! server -> ok u8 || HMAC(k, "decree-server" || cn || sn)        (ok = 0: refused, then closed)
//! ```
//!
//! Fresh nonces on both sides defeat replay; the server's proof stops a client from talking to an
//! impostor. Only the secret's holders can produce either MAC.

use crate::secret::random_bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{Read, Write};
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

const AUTH_MAGIC: &[u8; 8] = b"DAUTHv01";
const NONCE_BYTES: usize = 32;
const MAC_BYTES: usize = 32;

/// Who is connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A client (id unused).
    Client,
    /// Another replica with this id.
    Replica(u32),
}

/// Why authentication failed.
#[derive(Debug, Error)]
pub enum AuthError {
    /// The socket failed mid-handshake.
    #[error("handshake I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The other side is not speaking decree's handshake.
    #[error("peer did not send decree's auth greeting (not a decree replica?)")]
    BadGreeting,
    /// The other side's MAC does not verify: it holds a different secret.
    #[error("wrong cluster secret: the peer's proof does not verify (check secret_file on both sides)")]
    WrongSecret,
    /// The server refused us.
    #[error("the replica refused our credentials: wrong cluster secret")]
    Refused,
    /// Unknown connection kind.
    #[error("unknown connection kind {0}")]
    BadKind(u8),
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

fn encode_peer(peer: Peer) -> [u8; 5] {
    let (kind, id) = match peer {
        Peer::Client => (0u8, 0u32),
        Peer::Replica(id) => (1u8, id),
    };
    let mut out = [0u8; 5];
    out[0] = kind;
    out[1..5].copy_from_slice(&id.to_le_bytes());
    out
}

/// Server side: challenges, verifies, proves itself. Returns who connected.
pub fn accept(stream: &mut (impl Read + Write), key: &[u8]) -> Result<Peer, AuthError> {
    let server_nonce = random_bytes(NONCE_BYTES);
    let mut greeting = AUTH_MAGIC.to_vec();
    greeting.extend_from_slice(&server_nonce);
    stream.write_all(&greeting)?;
    let mut hello = [0u8; 5 + NONCE_BYTES + MAC_BYTES];
    stream.read_exact(&mut hello)?;
    let (who, rest) = hello.split_at(5);
    let (client_nonce, proof) = rest.split_at(NONCE_BYTES);
    let verified = mac(key, &[b"decree-client", &server_nonce, client_nonce, who]).verify_slice(proof).is_ok();
    if !verified {
        let _ = stream.write_all(&[0u8; 1 + MAC_BYTES]);
        return Err(AuthError::WrongSecret);
    }
    let peer = match who[0] {
        0 => Peer::Client,
        1 => Peer::Replica(u32::from_le_bytes(who[1..5].try_into().expect("4 bytes"))),
        other => return Err(AuthError::BadKind(other)),
    };
    let mut answer = vec![1u8];
    answer.extend_from_slice(&mac(key, &[b"decree-server", client_nonce, &server_nonce]).finalize().into_bytes());
    stream.write_all(&answer)?;
    Ok(peer)
}

/// Client side: answers the challenge as `peer` and checks the server's proof.
pub fn connect(stream: &mut (impl Read + Write), key: &[u8], peer: Peer) -> Result<(), AuthError> {
    let mut greeting = [0u8; 8 + NONCE_BYTES];
    stream.read_exact(&mut greeting)?;
    if &greeting[..8] != AUTH_MAGIC {
        return Err(AuthError::BadGreeting);
    }
    let server_nonce = &greeting[8..];
    let client_nonce = random_bytes(NONCE_BYTES);
    let who = encode_peer(peer);
    let mut hello = who.to_vec();
    hello.extend_from_slice(&client_nonce);
    hello.extend_from_slice(&mac(key, &[b"decree-client", server_nonce, &client_nonce, &who]).finalize().into_bytes());
    stream.write_all(&hello)?;
    let mut answer = [0u8; 1 + MAC_BYTES];
    stream.read_exact(&mut answer)?;
    if answer[0] != 1 {
        return Err(AuthError::Refused);
    }
    mac(key, &[b"decree-server", &client_nonce, server_nonce])
        .verify_slice(&answer[1..])
        .map_err(|_| AuthError::WrongSecret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn handshake(server_key: &'static [u8], client_key: &'static [u8]) -> (Result<Peer, AuthError>, Result<(), AuthError>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || accept(&mut listener.accept().unwrap().0, server_key));
        let client = connect(&mut TcpStream::connect(addr).unwrap(), client_key, Peer::Replica(2));
        (server.join().unwrap(), client)
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let (server, client) = handshake(b"0123456789abcdef0123", b"0123456789abcdef0123");
        assert_eq!(server.unwrap(), Peer::Replica(2));
        assert!(client.is_ok());
    }

    #[test]
    fn wrong_secret_is_refused_on_both_sides() {
        let (server, client) = handshake(b"0123456789abcdef0123", b"fedcba9876543210fedc");
        assert!(matches!(server, Err(AuthError::WrongSecret)));
        assert!(matches!(client, Err(AuthError::Refused)));
    }
}
