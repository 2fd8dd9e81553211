//! The cluster secret: read from the file the config names (never the command line), or generated
//! for a local cluster. Also the host's randomness source for nonces and ids.

use std::io::Read;
use std::path::Path;
use thiserror::Error;

/// Fewest secret bytes accepted.
pub const MIN_SECRET_BYTES: usize = 16;

/// A secret file problem.
#[derive(Debug, Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("cannot read secret file {path}: {source} (create it with 32+ random bytes, mode 0600)")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Too short to be a key.
    #[error("secret file {path} holds {len} bytes; at least {MIN_SECRET_BYTES} are required (e.g. `head -c 32 /dev/urandom | xxd -p -c 64 > {path}`)")]
    TooShort {
        /// The file.
        path: String,
        /// Bytes found.
        len: usize,
    },
}

/// Reads the key: the file's bytes with surrounding whitespace trimmed.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, SecretError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| SecretError::Read { path: shown.clone(), source })?;
    let trimmed = bytes.trim_ascii().to_vec();
    if trimmed.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort { path: shown, len: trimmed.len() });
    }
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %shown, "secret file is readable by group/others; run `chmod 600 {shown}`");
        }
    }
    Ok(trimmed)
}

/// Writes a new random secret (32 bytes, hex) with mode 0600.
pub fn generate_secret(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let hex: String = random_bytes(32).iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    writeln!(file, "{hex}")
}

/// `n` bytes from the kernel's CSPRNG.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut out))
        .expect("/dev/urandom must be readable");
    out
}

/// A random u64 (client session ids).
pub fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes(8).try_into().expect("8 bytes"))
}
