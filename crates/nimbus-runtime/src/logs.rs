//! Instance logs: one append-only file per instance, rotated by copy-and-truncate, and the ways to
//! read it (the last lines, the lines since a time, and a cursor for `logs -f`).
//!
//! The app writes plain lines, so when a line was written is kept beside the log: its time index
//! (`{id}.log.idx`) gets a mark `UNIX_MS SIZE` whenever the log is seen to have grown (every
//! couple of seconds for processes, about once a second for containers). A mark says every byte
//! before SIZE was written by then, so the lines since a time start at the latest mark made
//! before it: `logs --since` is as exact as the marks are frequent.
//!
//! The child writes to its log through an `O_APPEND` descriptor it owns, so logging does not
//! depend on the server being alive. Rotation copies `{id}.log` to `{id}.log.1` (replacing the old
//! one) and truncates `{id}.log` to 0; the child's next append lands at the new end. Lines written
//! between the copy and the truncate are lost, the usual `copytruncate` trade-off.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

#[cfg(test)]
mod tests;

/// Bytes read per step when scanning a log backwards.
const TAIL_BLOCK: u64 = 8 * 1024;
/// `tail_lines` never reads more than this much of a file, however long its lines.
const TAIL_MAX_BYTES: u64 = 4 * 1024 * 1024;

/// The rotated sibling of a log file: `{id}.log` → `{id}.log.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".1");
    PathBuf::from(name)
}

/// The time index of a log: `{id}.log` → `{id}.log.idx` (and `{id}.log.1.idx` for the rotated
/// copy).
pub fn index_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_os_string();
    name.push(".idx");
    PathBuf::from(name)
}

/// Records in `log`'s index that it was `size` bytes long at `at_ms` (Unix milliseconds).
pub fn append_mark(log: &Path, at_ms: u64, size: u64) -> io::Result<()> {
    use std::io::Write;
    let mut index = open_append(&index_path(log))?;
    index.write_all(format!("{at_ms} {size}\n").as_bytes())
}

/// The marks of a log's index, oldest first; a torn or foreign line is skipped. A missing index
/// has none.
pub fn read_marks(log: &Path) -> Vec<Mark> {
    let Ok(text) = std::fs::read_to_string(index_path(log)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (at, size) = line.split_once(' ')?;
            Some(Mark {
                at_ms: at.parse().ok()?,
                size: size.parse().ok()?,
            })
        })
        .collect()
}

/// A log was `size` bytes long at `at_ms`: every byte before `size` was written by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub at_ms: u64,
    pub size: u64,
}

/// Where the lines written at or after `since_ms` begin, given a log's marks: the size at the
/// latest mark made at or before `since_ms`, or 0 when none was (the whole log may be newer).
/// Lines written in the gap between that mark and `since_ms` come along, never fewer.
pub fn offset_since(marks: &[Mark], since_ms: u64) -> u64 {
    marks
        .iter()
        .filter(|m| m.at_ms <= since_ms)
        .map(|m| m.size)
        .max()
        .unwrap_or(0)
}

/// Whether a log with these marks may hold lines written at or after `since_ms`: its newest mark
/// is not older (a log without marks might).
pub fn may_hold_since(marks: &[Mark], since_ms: u64) -> bool {
    marks.last().is_none_or(|m| m.at_ms >= since_ms)
}

/// Adds a mark to `log`'s index when the log has grown since the last one, so a quiet log costs
/// one `stat`. Remembers the last marked size itself.
#[derive(Debug, Default)]
pub struct Marker {
    marked: Option<u64>,
}

impl Marker {
    /// Marks `log` as `size` bytes at `at_ms` unless that is the size last marked. A failed
    /// write is retried at the next call.
    pub fn mark(&mut self, log: &Path, at_ms: u64, size: u64) -> io::Result<()> {
        if self.marked == Some(size) {
            return Ok(());
        }
        append_mark(log, at_ms, size)?;
        self.marked = Some(size);
        Ok(())
    }

    /// Rotates `log` when it is over `cap` bytes (which leaves its index a mark of the emptied
    /// log), else marks its size: the periodic upkeep of a running instance's log. Returns
    /// whether it rotated; a missing log is left alone.
    pub fn upkeep(&mut self, log: &Path, cap: u64) -> io::Result<bool> {
        let len = match std::fs::metadata(log) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if len > cap {
            rotate(log)?;
            self.marked = Some(0);
            return Ok(true);
        }
        self.mark(log, unix_ms(), len)?;
        Ok(false)
    }
}

/// Now, as Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The last `max_lines` complete lines of `log` written at or after `since_ms`, oldest first
/// (also from the rotated copy when it may hold some), reading at most `max_bytes` of each file.
pub fn lines_since(log: &Path, since_ms: u64, max_lines: usize, max_bytes: usize) -> Vec<String> {
    let marks = read_marks(log);
    let copy = rotated_path(log);
    let copy_marks = read_marks(&copy);
    // The copy holds what was written up to the rotation, which the emptied log's first mark
    // (size 0) dates.
    let copy_may_hold = match marks.first().filter(|m| m.size == 0) {
        Some(rotation) => rotation.at_ms > since_ms,
        None => !copy_marks.is_empty() && may_hold_since(&copy_marks, since_ms),
    };
    let mut lines = Vec::new();
    if copy_may_hold {
        lines = read_since(&copy, &copy_marks, since_ms, max_bytes);
    }
    lines.extend(read_since(log, &marks, since_ms, max_bytes));
    let skip = lines.len().saturating_sub(max_lines);
    lines.split_off(skip)
}

/// The complete lines of one file from where `since_ms` starts by its `marks`, reading at most
/// its last `max_bytes`.
fn read_since(path: &Path, marks: &[Mark], since_ms: u64, max_bytes: usize) -> Vec<String> {
    let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
        return Vec::new();
    };
    let from = offset_since(marks, since_ms);
    // The newest lines matter most: past the budget, start later rather than stop early.
    let start = from.max(len.saturating_sub(max_bytes as u64));
    let Ok((mut found, _)) = read_from(path, start, max_bytes) else {
        return Vec::new();
    };
    if start > from && !found.is_empty() {
        found.remove(0); // starts mid-line
    }
    found
}

/// Opens (creating it and its directories) a log file for appending.
pub fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Rotates `path` when it is larger than `cap` bytes: copy to `.1`, then truncate to 0.
/// Returns whether it rotated. A missing file is not an error.
pub fn rotate_if_over(path: &Path, cap: u64) -> io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= cap {
        return Ok(false);
    }
    rotate(path)?;
    Ok(true)
}

/// Copies `path` to `.1`, empties it, and moves its marks with the copy.
fn rotate(path: &Path) -> io::Result<()> {
    std::fs::copy(path, rotated_path(path))?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    // The marks describe the copy now; the emptied log starts afresh from this moment.
    match std::fs::rename(index_path(path), index_path(&rotated_path(path))) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let _ = std::fs::remove_file(index_path(&rotated_path(path)));
        }
        Err(e) => return Err(e),
    }
    append_mark(path, unix_ms(), 0)
}

/// The last `n` lines of a log, oldest first, without reading the whole file. When the current
/// file has fewer than `n` lines, the rest come from the end of the rotated file (`.1`).
/// A missing or unreadable file counts as empty. Invalid UTF-8 is replaced.
pub fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let mut lines = tail_of_file(path, n);
    if lines.len() < n {
        let mut older = tail_of_file(&rotated_path(path), n - lines.len());
        older.append(&mut lines);
        lines = older;
    }
    lines
}

/// The last `n` lines of one file (a final line without `\n` counts).
fn tail_of_file(path: &Path, n: usize) -> Vec<String> {
    let Ok(mut file) = File::open(path) else {
        return Vec::new();
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    // Read blocks from the end until they hold more than `n` line breaks (not counting the file's
    // final `\n`; the extra one marks where the first wanted line starts), or the file or the
    // read budget runs out.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut breaks = 0usize;
    let mut start = len;
    while start > 0 && (len - start) < TAIL_MAX_BYTES {
        let step = TAIL_BLOCK.min(start);
        start -= step;
        let mut block = vec![0u8; step as usize];
        if file.seek(SeekFrom::Start(start)).is_err() || file.read_exact(&mut block).is_err() {
            // The file shrank under us (rotation); use what we have.
            break;
        }
        breaks += bytecount(&block, b'\n');
        if blocks.is_empty() && block.last() == Some(&b'\n') {
            breaks -= 1;
        }
        blocks.push(block);
        if breaks >= n {
            break;
        }
    }
    let buf: Vec<u8> = blocks.into_iter().rev().flatten().collect();
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    if body.is_empty() {
        return Vec::new();
    }
    let mut lines: Vec<String> = body
        .rsplit(|&b| b == b'\n')
        .take(n)
        .map(|l| String::from_utf8_lossy(strip_cr(l)).into_owned())
        .collect();
    // The first piece may be a partial line when the read budget ran out; keep it, it is the best
    // we have.
    lines.reverse();
    lines
}

/// Complete lines starting at byte `offset`, reading at most `max_bytes`, and the offset to pass
/// next time. If the file is now shorter than `offset` it was rotated, and reading restarts at 0.
/// A line longer than `max_bytes` is returned in `max_bytes` pieces so the cursor always moves.
/// An unfinished last line (no `\n` yet) is left for the next call.
pub fn read_from(path: &Path, offset: u64, max_bytes: usize) -> io::Result<(Vec<String>, u64)> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let offset = if len < offset { 0 } else { offset };
    if max_bytes == 0 || len == offset {
        return Ok((Vec::new(), offset));
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(max_bytes.min((len - offset) as usize));
    file.take(max_bytes as u64).read_to_end(&mut buf)?;
    let complete = match buf.iter().rposition(|&b| b == b'\n') {
        Some(last) => last + 1,
        None if buf.len() >= max_bytes => buf.len(),
        None => 0,
    };
    let chunk = &buf[..complete];
    let body = chunk.strip_suffix(b"\n").unwrap_or(chunk);
    let lines = if chunk.is_empty() {
        Vec::new()
    } else {
        body.split(|&b| b == b'\n')
            .map(|l| String::from_utf8_lossy(strip_cr(l)).into_owned())
            .collect()
    };
    Ok((lines, offset + complete as u64))
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn bytecount(haystack: &[u8], needle: u8) -> usize {
    haystack.iter().filter(|&&b| b == needle).count()
}
