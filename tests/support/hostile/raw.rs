//! Raw connections: reading until the server closes, and HTTP/2 frames no library would send.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

/// Reads until the peer closes (EOF or error), at most `limit`; returns what was read and
/// when the connection closed (`None`: still open at `limit`).
pub async fn until_closed<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Err(_) => return (seen, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, Some(started.elapsed())),
            Ok(Ok(n)) => {
                if seen.len() < 64 * 1024 {
                    seen.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

/// The slowest of the closing times, or the first connection still open.
pub fn slowest_close(closed: &[Option<Duration>]) -> Result<Duration, usize> {
    closed.iter().try_fold(Duration::ZERO, |max, c| match c {
        Some(d) => Ok(max.max(*d)),
        None => Err(closed.iter().filter(|c| c.is_none()).count()),
    })
}

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub const H2_HEADERS: u8 = 0x1;
pub const H2_SETTINGS: u8 = 0x4;
pub const H2_CONTINUATION: u8 = 0x9;
