//! Message bodies: written in memory or spilled to a file under `bodies/`, and read back.
//!
//! A body up to the spool's `large_body_threshold` stays in memory and is stored inline in
//! the database. A larger one is moved to a file as soon as it crosses the threshold, so a
//! session's memory does not grow with the message size. Such a file is first named
//! `bodies/<n>.tmp`; the committer fdatasyncs it and renames it to `bodies/<queue id>` before
//! the commit that references it. A file that no committed record owns is deleted when its
//! `BodyWriter` or `Body` is dropped, and any left over by a crash at the next open.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::QueueId;
use crate::record::{encode_file_body, encode_inline_body};

const FILE_BUFFER: usize = 64 * 1024;

/// The `bodies/` directory and its naming rules.
#[derive(Debug)]
pub(crate) struct BodyDir {
    path: PathBuf,
    next_temp: AtomicU64,
}

impl BodyDir {
    pub(crate) fn new(path: PathBuf) -> BodyDir {
        BodyDir {
            path,
            next_temp: AtomicU64::new(0),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Where a stored message's body file lives.
    pub(crate) fn stored_path(&self, id: QueueId) -> PathBuf {
        self.path.join(id.to_string())
    }

    /// A fresh name for a body still being written. Unique within the process; the database
    /// lock guarantees no other process uses this directory.
    fn temp_path(&self) -> PathBuf {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        self.path.join(format!("{n}.tmp"))
    }

    /// Makes renames in the directory durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        File::open(&self.path)?.sync_all()
    }
}

/// A body file that is deleted on drop unless a committed record owns it.
#[derive(Debug)]
struct OwnedFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for OwnedFile {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if let Err(error) = std::fs::remove_file(&self.path)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), %error, "could not delete unused body file");
        }
    }
}

/// Receives a new message body as it arrives (for example during DATA).
///
/// Writes are plain buffered `std::fs` writes that land in the page cache; durability comes
/// later, from the committer. Dropping an unfinished writer deletes its file.
#[derive(Debug)]
pub struct BodyWriter {
    dir: Arc<BodyDir>,
    threshold: usize,
    len: u64,
    crc: crc32fast::Hasher,
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    Memory(Vec<u8>),
    // Field order matters: the writer is dropped (and flushed) before the file is deleted.
    File {
        writer: BufWriter<File>,
        file: OwnedFile,
    },
}

impl BodyWriter {
    pub(crate) fn new(dir: Arc<BodyDir>, threshold: usize) -> BodyWriter {
        BodyWriter {
            dir,
            threshold,
            len: 0,
            crc: crc32fast::Hasher::new(),
            sink: Sink::Memory(Vec::new()),
        }
    }

    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            Sink::Memory(buffer) if buffer.len() + data.len() <= self.threshold => {
                buffer.extend_from_slice(data);
            }
            Sink::Memory(buffer) => {
                let path = self.dir.temp_path();
                let handle = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|error| with_path(&path, error))?;
                let file = OwnedFile { path, keep: false };
                let mut writer = BufWriter::with_capacity(FILE_BUFFER, handle);
                writer.write_all(buffer)?;
                writer.write_all(data)?;
                self.sink = Sink::File { writer, file };
            }
            Sink::File { writer, .. } => writer.write_all(data)?,
        }
        self.len += data.len() as u64;
        self.crc.update(data);
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Ends the body with `prefix` in front of everything written: for data computed from the
    /// whole content, such as a signature header field. An in-memory body takes it in place; a
    /// file body is copied once, behind the prefix, into a new file (in the page cache, like
    /// every write here). Blocking I/O for a file body.
    pub fn finish_with_prefix(self, prefix: &[u8]) -> io::Result<Body> {
        let BodyWriter {
            dir,
            len,
            crc,
            sink,
            ..
        } = self;
        let mut whole_crc = crc32fast::Hasher::new();
        whole_crc.update(prefix);
        whole_crc.combine(&crc);
        let content = match sink {
            Sink::Memory(bytes) => {
                let mut whole = Vec::with_capacity(prefix.len() + bytes.len());
                whole.extend_from_slice(prefix);
                whole.extend_from_slice(&bytes);
                Content::Inline(whole)
            }
            Sink::File { writer, file } => {
                drop(
                    writer
                        .into_inner()
                        .map_err(|error| with_path(&file.path, error.into_error()))?,
                );
                let path = dir.temp_path();
                let handle = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|error| with_path(&path, error))?;
                let copy = OwnedFile { path, keep: false };
                let mut writer = BufWriter::with_capacity(FILE_BUFFER, handle);
                writer.write_all(prefix)?;
                let mut source =
                    File::open(&file.path).map_err(|error| with_path(&file.path, error))?;
                io::copy(&mut source, &mut writer)?;
                let handle = writer
                    .into_inner()
                    .map_err(|error| with_path(&copy.path, error.into_error()))?;
                // Dropping `file` deletes the original.
                drop(file);
                Content::File { handle, file: copy }
            }
        };
        Ok(Body {
            len: len + prefix.len() as u64,
            crc: whole_crc.finalize(),
            content,
        })
    }

    /// Ends the body: flushes a file body to the page cache (not to disk).
    pub fn finish(self) -> io::Result<Body> {
        let BodyWriter { len, crc, sink, .. } = self;
        let content = match sink {
            Sink::Memory(bytes) => Content::Inline(bytes),
            Sink::File { writer, file } => {
                let handle = writer
                    .into_inner()
                    .map_err(|error| with_path(&file.path, error.into_error()))?;
                Content::File { handle, file }
            }
        };
        Ok(Body {
            len,
            crc: crc.finalize(),
            content,
        })
    }
}

fn with_path(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

/// A complete message body, ready to be stored. Dropping a body that was not stored deletes
/// its file.
#[derive(Debug)]
pub struct Body {
    len: u64,
    crc: u32,
    content: Content,
}

#[derive(Debug)]
enum Content {
    Inline(Vec<u8>),
    File { handle: File, file: OwnedFile },
}

impl Body {
    /// An inline body, for small generated messages such as bounces. Larger bodies should go
    /// through [`crate::Spool::body_writer`], which spills them to a file.
    pub fn from_bytes(bytes: Vec<u8>) -> Body {
        Body {
            len: bytes.len() as u64,
            crc: crc32fast::hash(&bytes),
            content: Content::Inline(bytes),
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body's bytes when it is held in memory (a small body), `None` for
    /// a file body.
    pub fn inline_bytes(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Inline(bytes) => Some(bytes),
            Content::File { .. } => None,
        }
    }

    /// Bytes this body adds to a commit (file bodies are written separately).
    pub(crate) fn inline_len(&self) -> usize {
        match &self.content {
            Content::Inline(bytes) => bytes.len(),
            Content::File { .. } => 0,
        }
    }

    /// The value stored in the bodies table.
    pub(crate) fn record(&self) -> Vec<u8> {
        match &self.content {
            Content::Inline(bytes) => encode_inline_body(bytes),
            Content::File { .. } => encode_file_body(self.len, self.crc),
        }
    }

    /// For a file body: makes its data durable and gives it the stored name of `id`. Returns
    /// whether it did (the directory then needs a sync before the commit).
    pub(crate) fn persist(&mut self, dir: &BodyDir, id: QueueId) -> io::Result<bool> {
        let Content::File { handle, file } = &mut self.content else {
            return Ok(false);
        };
        handle
            .sync_data()
            .map_err(|error| with_path(&file.path, error))?;
        let stored = dir.stored_path(id);
        std::fs::rename(&file.path, &stored).map_err(|error| with_path(&file.path, error))?;
        file.path = stored;
        Ok(true)
    }

    /// Whether this body has a file (that `persist` moved to its stored name).
    pub(crate) fn is_file(&self) -> bool {
        matches!(self.content, Content::File { .. })
    }

    /// The body was committed: its file now belongs to the stored record.
    pub(crate) fn keep(mut self) {
        if let Content::File { file, .. } = &mut self.content {
            file.keep = true;
        }
    }
}

/// Reads a stored body. An inline body was copied out of the database (no read transaction
/// stays open); a file body is streamed and its checksum is checked at the end, where a
/// mismatch is an `InvalidData` error.
#[derive(Debug)]
pub struct BodyReader {
    len: u64,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Inline(Cursor<Vec<u8>>),
    File {
        reader: BufReader<File>,
        path: PathBuf,
        crc: crc32fast::Hasher,
        expected_crc: u32,
        remaining: u64,
    },
}

impl BodyReader {
    pub(crate) fn inline(bytes: Vec<u8>) -> BodyReader {
        BodyReader {
            len: bytes.len() as u64,
            source: Source::Inline(Cursor::new(bytes)),
        }
    }

    pub(crate) fn file(file: File, path: PathBuf, len: u64, expected_crc: u32) -> BodyReader {
        BodyReader {
            len,
            source: Source::File {
                reader: BufReader::with_capacity(FILE_BUFFER, file),
                path,
                crc: crc32fast::Hasher::new(),
                expected_crc,
                remaining: len,
            },
        }
    }

    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (reader, path, crc, expected_crc, remaining) = match &mut self.source {
            Source::Inline(cursor) => return cursor.read(buf),
            Source::File {
                reader,
                path,
                crc,
                expected_crc,
                remaining,
            } => (reader, path, crc, expected_crc, remaining),
        };
        if buf.is_empty() {
            return Ok(0);
        }
        let n = reader.read(buf)?;
        if n as u64 > *remaining {
            return Err(corrupt_file(path, "longer than recorded"));
        }
        *remaining -= n as u64;
        crc.update(&buf[..n]);
        if n == 0 {
            if *remaining != 0 {
                return Err(corrupt_file(path, "shorter than recorded"));
            }
            if crc.clone().finalize() != *expected_crc {
                return Err(corrupt_file(path, "checksum mismatch"));
            }
        }
        Ok(n)
    }
}

fn corrupt_file(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("body file {}: {what}", path.display()),
    )
}
