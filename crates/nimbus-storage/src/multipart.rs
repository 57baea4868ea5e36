//! The pure rules of completing a multipart upload: which parts may be joined, and the etag of
//! the result.

use std::collections::BTreeMap;

use s3s::crypto::{Checksum, Md5};

#[cfg(test)]
mod tests;

/// Every part but the last must be at least this big (S3's rule).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Part numbers run from 1 to this.
pub const MAX_PART_NUMBER: i32 = 10_000;

/// A part stored for an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    pub etag: String,
    pub size: u64,
}

/// Why a CompleteMultipartUpload request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    #[error("the request lists no parts")]
    NoParts,
    #[error("parts must be listed in ascending order of part number, each once")]
    InvalidPartOrder,
    #[error("part {0} was not uploaded or its etag does not match")]
    InvalidPart(i32),
    #[error("part {0} is smaller than 5 MiB and is not the last part")]
    EntityTooSmall(i32),
}

/// Checks the `(part number, etag)` list a client sent against the stored parts. Etags may come
/// quoted, as clients echo them from the UploadPart response.
pub fn check_parts(
    requested: &[(i32, String)],
    stored: &BTreeMap<i32, StoredPart>,
) -> Result<(), CompleteError> {
    if requested.is_empty() {
        return Err(CompleteError::NoParts);
    }
    if requested.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(CompleteError::InvalidPartOrder);
    }
    let last = requested.len() - 1;
    for (i, (number, etag)) in requested.iter().enumerate() {
        let part = stored
            .get(number)
            .filter(|p| p.etag == etag.trim_matches('"'))
            .ok_or(CompleteError::InvalidPart(*number))?;
        if i != last && part.size < MIN_PART_SIZE {
            return Err(CompleteError::EntityTooSmall(*number));
        }
    }
    Ok(())
}

/// S3's multipart etag: the md5 of the parts' binary md5 digests, a dash, and the part count.
/// `None` if a part etag is not an md5 in hex.
pub fn multipart_etag<'a>(part_etags: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut hasher = Md5::new();
    let mut count = 0usize;
    for etag in part_etags {
        hasher.update(&decode_hex(etag)?);
        count += 1;
    }
    Some(format!("{}-{count}", hex(&hasher.finalize())))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
