//! What leader and follower exchange over the TCP side channel to connect their queue pairs.

use super::ffi::QpEndpoint;
use crate::conn::Fields;
use crate::VerbsError;

/// Appends a QP endpoint to a message body.
pub fn put_endpoint(out: &mut Vec<u8>, ep: &QpEndpoint) {
    out.extend_from_slice(&ep.qpn.to_le_bytes());
    out.extend_from_slice(&ep.psn.to_le_bytes());
    out.extend_from_slice(&u32::from(ep.lid).to_le_bytes());
    out.extend_from_slice(&ep.gid);
}

/// Reads a QP endpoint from a message body.
pub fn get_endpoint(f: &mut Fields<'_>) -> Result<QpEndpoint, VerbsError> {
    let qpn = f.u32()?;
    let psn = f.u32()? & 0x00ff_ffff;
    let lid = f.u32()? as u16;
    let mut gid = [0u8; 16];
    for b in &mut gid {
        *b = f.u8()?;
    }
    Ok(QpEndpoint { qpn, psn, lid, gid })
}

/// The follower's reply: its region (address, rkey, size) and its QP endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// Region start address in the follower's address space.
    pub addr: u64,
    /// The region's rkey.
    pub rkey: u32,
    /// Region size.
    pub len: u64,
    /// The follower's QP.
    pub qp: QpEndpoint,
    /// The region is persistent memory (device-DAX), so read-after-write can prove durability.
    pub persistent: bool,
}

impl Welcome {
    /// Encodes as a message body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        out.extend_from_slice(&self.addr.to_le_bytes());
        out.extend_from_slice(&self.rkey.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        put_endpoint(&mut out, &self.qp);
        out.push(u8::from(self.persistent));
        out
    }

    /// Decodes a message body from `peer`.
    pub fn decode(body: &[u8], peer: &str) -> Result<Welcome, VerbsError> {
        let mut f = Fields::new(body, peer);
        Ok(Welcome {
            addr: f.u64()?,
            rkey: f.u32()?,
            len: f.u64()?,
            qp: get_endpoint(&mut f)?,
            persistent: f.u8()? != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welcome_round_trips_and_short_body_is_refused() {
        let w = Welcome {
            addr: 0x7f00_0000_1000,
            rkey: 0x1234,
            len: 1 << 20,
            qp: QpEndpoint {
                qpn: 17,
                psn: 0x42,
                lid: 0,
                gid: [7; 16],
            },
            persistent: true,
        };
        let body = w.encode();
        assert_eq!(Welcome::decode(&body, "p").unwrap(), w);
        assert!(matches!(
            Welcome::decode(&body[..body.len() - 1], "p"),
            Err(VerbsError::Protocol { .. })
        ));
    }
}
