//! Where things live under the storage root, and the pure mapping from an object key to a file
//! path inside its bucket directory.
//!
//! ```text
//! ROOT/
//!   tmp/                          temp files; same filesystem, so a rename into place is atomic
//!   buckets/BUCKET/
//!     _bucket.json                creation time (a bucket dir is never empty)
//!     _blobs/ID                   object bytes, named by a random id
//!     _uploads/UPLOAD_ID/         a multipart upload: upload.json + NNNNN.ETAG part files
//!     dSEGMENT/…/mSEGMENT         one sidecar per object: the key split on '/'
//! ```
//!
//! A key is split on `/`; each segment is percent-encoded (everything but `A-Z a-z 0-9 - _ .`) and
//! prefixed with `d` for a directory or `m` for the object's metadata sidecar. The prefix keeps
//! `a` and `a/b` apart (a sidecar `ma` and a directory `da`), and no encoded name is ever `.`,
//! `..` or contains `/`, so a key cannot escape its bucket directory. Names starting with `_`
//! belong to Nimbus and are never keys.
//!
//! The sidecar is the commit point: it names the blob that holds the object's bytes, and it is
//! replaced by one atomic rename, so a reader sees the old object or the new one, never a mix.

use std::path::PathBuf;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

#[cfg(test)]
mod tests;

/// S3's limit on a key's UTF-8 length.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest file name most Linux filesystems accept (`NAME_MAX`).
const MAX_FILE_NAME: usize = 255;
/// Everything but these bytes is percent-encoded in a segment.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

pub const BUCKETS_DIR: &str = "buckets";
pub const TMP_DIR: &str = "tmp";
pub const BUCKET_INFO_FILE: &str = "_bucket.json";
pub const BLOBS_DIR: &str = "_blobs";
pub const UPLOADS_DIR: &str = "_uploads";
pub const UPLOAD_INFO_FILE: &str = "upload.json";

/// Length of blob and upload ids: 128 random bits in lowercase hex.
const ID_LEN: usize = 32;

/// Why a key cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error("the key is {0} bytes long; the limit is 1024")]
    TooLong(usize),
    #[error(
        "a '/'-separated part of the key is too long to store once encoded (use shorter parts)"
    )]
    SegmentTooLong,
}

/// An object's sidecar path relative to its bucket directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    /// Encoded directory names, outermost first (`d…`).
    pub dirs: Vec<String>,
    /// The encoded sidecar file name (`m…`).
    pub file: String,
}

/// One directory entry inside a bucket, as the key walker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A directory holding keys that continue with this segment and a `/`.
    Dir(String),
    /// An object sidecar whose key ends with this segment.
    Object(String),
}

// === impl ObjectPath ===

impl ObjectPath {
    pub fn from_key(key: &str) -> Result<Self, KeyError> {
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong(key.len()));
        }
        let mut segments: Vec<&str> = key.split('/').collect();
        // `split` yields at least one item, so there is a last segment.
        let last = segments.pop().unwrap_or_default();
        let dirs = segments
            .into_iter()
            .map(dir_name)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            dirs,
            file: entry_name('m', last)?,
        })
    }

    /// The sidecar's path relative to the bucket directory.
    pub fn relative(&self) -> PathBuf {
        let mut path: PathBuf = self.dirs.iter().collect();
        path.push(&self.file);
        path
    }
}

/// The directory name for one key segment.
pub fn dir_name(segment: &str) -> Result<String, KeyError> {
    entry_name('d', segment)
}

fn entry_name(kind: char, segment: &str) -> Result<String, KeyError> {
    let name = format!("{kind}{}", utf8_percent_encode(segment, ENCODE));
    if name.len() > MAX_FILE_NAME {
        return Err(KeyError::SegmentTooLong);
    }
    Ok(name)
}

/// Reads a file name found in a bucket directory. Names Nimbus did not write (other prefixes,
/// invalid or non-canonical encodings) are `None`, so two names never decode to the same key.
pub fn parse_entry(name: &str) -> Option<Entry> {
    let mut chars = name.chars();
    let kind = chars.next()?;
    let encoded = chars.as_str();
    let segment = percent_decode_str(encoded).decode_utf8().ok()?.into_owned();
    if utf8_percent_encode(&segment, ENCODE).to_string() != encoded {
        return None;
    }
    match kind {
        'd' => Some(Entry::Dir(segment)),
        'm' => Some(Entry::Object(segment)),
        _ => None,
    }
}

/// The directories that every key starting with `prefix` lies under: the encoded segments before
/// the prefix's last `/`. `None` when no stored key can start with `prefix`.
pub fn prefix_dirs(prefix: &str) -> Option<Vec<String>> {
    let complete = match prefix.rfind('/') {
        Some(end) => &prefix[..end],
        None => return Some(Vec::new()),
    };
    complete.split('/').map(|s| dir_name(s).ok()).collect()
}

/// A fresh random id for a blob or an upload.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Ids come back from clients (upload ids) or from disk; only our own format is used as a path.
pub fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The file name of an uploaded part: the number, then its etag (so a part file says what it
/// holds, and replacing a part is one rename plus removing the old name).
pub fn part_file_name(number: u16, etag: &str) -> String {
    format!("{number:05}.{etag}")
}

/// The number and etag of a part file written by [`part_file_name`].
pub fn parse_part_file_name(name: &str) -> Option<(u16, String)> {
    let (number, etag) = name.split_once('.')?;
    if number.len() != 5 || !is_md5_hex(etag) {
        return None;
    }
    Some((number.parse().ok()?, etag.to_owned()))
}

/// An md5 digest in lowercase hex.
pub fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
