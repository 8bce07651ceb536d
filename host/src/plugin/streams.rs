//! Bulk bytes stay on the host: the destination, upload-source and reply
//! resources.
//!
//! A plugin never sees a file. It gets a `destination` whose `begin` opens a
//! `wasi:io` output stream positioned where the host wants the body (the
//! resume offset, or zero for a restart), a `source` whose `open` gives an
//! input stream over the upload file, a `reply-sink` that takes an upload's
//! reply (any size) into a host file, and, for reply processors, a
//! `reply-file` to write the owner's reply file. All are host objects, so a
//! plugin that splices an HTTP body into them moves bytes host-to-host
//! without copying them through its own memory.
//!
//! Writes are positional (`pwrite`) into a file the caller opened; what was
//! written is published in [`DownloadProgress`] for the job engine, which
//! decides when to sync and checkpoint.

use crate::error::{ErrorContext, TransferError};
use crate::plugin::transfer::{RemoteInfo, ReplyHead};
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, OutputStream, StreamError, StreamResult};

/// How much a plugin may write per `check-write` permit.
const CHUNK: usize = 1 << 20;

/// The most one read of an upload source returns. Each read is a fresh
/// buffer handed to the socket; at this size it comes from the heap, where
/// a 1 MiB one would be mapped and faulted in anew at every read (the
/// daemon maps blocks over 512 KiB: `daemon::tune_allocator`).
const SOURCE_READ: usize = 256 << 10;

/// What a download call did to its file, visible while it runs.
#[derive(Debug, Default)]
pub struct DownloadProgress {
    /// The file position just after the last byte written.
    pub written_to: AtomicU64,
    /// Set when the plugin restarted the file from zero.
    pub restarted: AtomicBool,
    /// What the server said when the body began.
    pub remote: Mutex<Option<RemoteInfo>>,
    /// A failure of the host's own file, which outranks what the plugin says.
    pub local_error: Mutex<Option<TransferError>>,
}

/// The host side of a `destination` resource: where one download call's
/// body goes.
pub struct Destination {
    file: Arc<File>,
    /// The remote offset the call asked for.
    request_offset: u64,
    /// The file position that byte goes to (differs from `request_offset`
    /// when byte ranges are packed one after another).
    file_position: u64,
    /// Whether the plugin may restart from zero (a whole-file download).
    may_restart: bool,
    progress: Arc<DownloadProgress>,
    stop: Option<CancellationToken>,
    /// Runs before the file is cut for a restart from zero: the engine
    /// records the restart durably first.
    before_restart: Option<RestartHook>,
}

/// What a destination runs before it starts its file over.
pub type RestartHook = Box<dyn Fn() -> Result<(), TransferError> + Send + Sync>;

impl Destination {
    /// A destination writing the body of remote offset `request_offset` at
    /// `file_position` of `file`.
    pub fn new(
        file: Arc<File>,
        request_offset: u64,
        file_position: u64,
        may_restart: bool,
    ) -> Destination {
        let progress = Arc::new(DownloadProgress::default());
        progress.written_to.store(file_position, Ordering::Release);
        Destination {
            file,
            request_offset,
            file_position,
            may_restart,
            progress,
            stop: None,
            before_restart: None,
        }
    }

    /// Runs `hook` before the file is cut for a restart from zero; a hook
    /// that fails refuses the restart.
    pub fn before_restart(mut self, hook: RestartHook) -> Destination {
        self.before_restart = Some(hook);
        self
    }

    /// Refuses every write once `stop` is cancelled, so a call that is being
    /// stopped cannot write after the job has moved on.
    pub fn stop_on(mut self, stop: CancellationToken) -> Destination {
        self.stop = Some(stop);
        self
    }

    /// The progress of this destination, to watch while the call runs.
    pub fn progress(&self) -> Arc<DownloadProgress> {
        self.progress.clone()
    }

    /// `destination.begin`: checks `from`, cuts the file there and opens a
    /// stream at that position.
    pub fn begin(&mut self, info: RemoteInfo, from: u64) -> Result<FileSink, TransferError> {
        let position = if from == self.request_offset {
            self.file_position
        } else if from == 0 && self.may_restart {
            if let Some(hook) = &self.before_restart {
                hook()?;
            }
            self.progress.restarted.store(true, Ordering::Release);
            0
        } else {
            return Err(TransferError::fatal(
                ErrorContext::Plugin,
                "bad-offset",
                format!(
                    "the plugin began the body at offset {from}; only {} (or 0 to restart) is allowed",
                    self.request_offset
                ),
            ));
        };
        self.file.set_len(position).map_err(|e| {
            TransferError::local_file("write-failed", &e, "cannot cut the temporary file")
        })?;
        self.progress.written_to.store(position, Ordering::Release);
        *self
            .progress
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(info);
        Ok(FileSink::at(
            self.file.clone(),
            position,
            self.progress.clone(),
            self.stop.clone(),
        ))
    }
}

/// An output stream writing at a position of a file.
pub struct FileSink {
    file: Arc<File>,
    position: u64,
    /// Where the kernel was last told to start writing the file back.
    written_back_from: u64,
    progress: Arc<DownloadProgress>,
    stop: Option<CancellationToken>,
}

/// Bytes written after which the kernel is asked to start writing them to
/// disk ([`start_writeback`]).
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to
/// disk, without waiting for it (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`). The disk then writes while the network goes
/// on, instead of all at once when a checkpoint or `complete` syncs the
/// file: the sync that makes the bytes durable finds little left to do.
/// Advisory: a failure changes nothing that the next sync does not catch.
fn start_writeback(file: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain system call on a file descriptor this sink holds
        // open; it reads no memory of ours.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
}

impl FileSink {
    fn at(
        file: Arc<File>,
        position: u64,
        progress: Arc<DownloadProgress>,
        stop: Option<CancellationToken>,
    ) -> FileSink {
        FileSink {
            file,
            position,
            written_back_from: position,
            progress,
            stop,
        }
    }
}

#[async_trait::async_trait]
impl OutputStream for FileSink {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.stop.as_ref().is_some_and(|s| s.is_cancelled()) {
            return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "the transfer was stopped"
            )));
        }
        let (position, from) = (self.position, self.written_back_from);
        let end = position + bytes.len() as u64;
        let write_back = end - from >= WRITEBACK_EVERY;
        // Off the async workers: a slow or full disk stalls this transfer
        // alone, not the API or other transfers.
        let written = crate::blocking::off_the_async_workers(|| {
            self.file.write_all_at(&bytes, position)?;
            if write_back {
                start_writeback(&self.file, from, end - from);
            }
            Ok::<_, std::io::Error>(())
        });
        if let Err(e) = written {
            let error =
                TransferError::local_file("write-failed", &e, "cannot write the temporary file");
            *self
                .progress
                .local_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(error);
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        self.position = end;
        if write_back {
            self.written_back_from = end;
        }
        self.progress
            .written_to
            .store(self.position, Ordering::Release);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(CHUNK)
    }
}

#[async_trait::async_trait]
impl Pollable for FileSink {
    async fn ready(&mut self) {}
}

/// What an upload call wrote into its reply sink.
#[derive(Debug, Default)]
pub struct ReplyProgress {
    /// The reply's status and headers, once the plugin began the reply.
    pub head: Mutex<Option<ReplyHead>>,
    /// The body written so far (`written_to` is its length).
    pub body: Arc<DownloadProgress>,
}

/// The host side of a `reply-sink` resource: an upload's reply, written to a
/// host file of any size.
pub struct ReplySink {
    file: Arc<File>,
    progress: Arc<ReplyProgress>,
    stop: Option<CancellationToken>,
}

impl ReplySink {
    /// A sink writing the reply body into `file`, from its start.
    pub fn new(file: Arc<File>, stop: CancellationToken) -> ReplySink {
        ReplySink {
            file,
            progress: Arc::new(ReplyProgress::default()),
            stop: Some(stop),
        }
    }

    /// What the call wrote, to read once it returns.
    pub fn progress(&self) -> Arc<ReplyProgress> {
        self.progress.clone()
    }

    /// `reply-sink.begin`: records the head and opens the body from zero
    /// (again, when called again).
    pub fn begin(&mut self, head: ReplyHead) -> Result<FileSink, TransferError> {
        self.file.set_len(0).map_err(|e| {
            TransferError::local_file("write-failed", &e, "cannot cut the reply file")
        })?;
        *self.progress.head.lock().unwrap_or_else(|e| e.into_inner()) = Some(head);
        self.progress.body.written_to.store(0, Ordering::Release);
        Ok(FileSink::at(
            self.file.clone(),
            0,
            self.progress.body.clone(),
            self.stop.clone(),
        ))
    }
}

/// The host side of a `reply-file` resource: the reply file a reply
/// processor writes instead of the server's raw reply.
pub struct ReplyFile {
    file: Arc<File>,
    opened: Arc<AtomicBool>,
    progress: Arc<DownloadProgress>,
}

impl ReplyFile {
    /// A reply file written into `file`.
    pub fn new(file: Arc<File>) -> ReplyFile {
        ReplyFile {
            file,
            opened: Arc::new(AtomicBool::new(false)),
            progress: Arc::new(DownloadProgress::default()),
        }
    }

    /// Set once the processor opened the file: its content then replaces
    /// the raw reply.
    pub fn opened(&self) -> Arc<AtomicBool> {
        self.opened.clone()
    }

    /// Failures of the host's own file during the call.
    pub fn progress(&self) -> Arc<DownloadProgress> {
        self.progress.clone()
    }

    /// The reply file as a 0.1 `destination` (how a 0.1 reply processor
    /// wrote it): its `begin` marks the file opened, through `progress`.
    pub fn into_destination(self) -> Destination {
        Destination {
            file: self.file,
            request_offset: 0,
            file_position: 0,
            may_restart: true,
            progress: self.progress,
            stop: None,
            before_restart: None,
        }
    }

    /// `reply-file.open`: empties the file and opens a stream at its start.
    pub fn open(&mut self) -> Result<FileSink, TransferError> {
        self.file.set_len(0).map_err(|e| {
            TransferError::local_file("write-failed", &e, "cannot cut the reply file")
        })?;
        self.opened.store(true, Ordering::Release);
        self.progress.written_to.store(0, Ordering::Release);
        Ok(FileSink::at(
            self.file.clone(),
            0,
            self.progress.clone(),
            None,
        ))
    }
}

/// What an upload call did, visible while it runs.
#[derive(Debug, Default)]
pub struct UploadProgress {
    /// Bytes the server has durably received, as the plugin acknowledged.
    pub acknowledged: AtomicU64,
    /// The size of the source.
    size: AtomicU64,
    /// The server's session, as the plugin recorded it.
    pub session: Mutex<Option<String>>,
    /// A failure of the host's own file (it changed, or cannot be read).
    pub local_error: Mutex<Option<TransferError>>,
    /// The digest of the source as the plugin read it, when asked for.
    digest: Mutex<Option<SourceDigest>>,
}

/// SHA-256 over the source's bytes in order, as far as they were read
/// without a gap.
struct SourceDigest {
    hasher: sha2::Sha256,
    hashed_to: u64,
}

impl std::fmt::Debug for SourceDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceDigest(hashed_to: {})", self.hashed_to)
    }
}

impl UploadProgress {
    /// Feeds bytes read at `position` into the digest, if one is kept.
    fn hash(&self, position: u64, bytes: &[u8]) {
        use sha2::Digest;
        let mut digest = self.digest.lock().unwrap_or_else(|e| e.into_inner());
        let Some(d) = digest.as_mut() else {
            return;
        };
        let end = position + bytes.len() as u64;
        if position <= d.hashed_to && end > d.hashed_to {
            let skip = usize::try_from(d.hashed_to - position).unwrap_or(usize::MAX);
            d.hasher.update(&bytes[skip..]);
            d.hashed_to = end;
        }
    }

    /// The SHA-256 of the whole source of `size` bytes, when every byte of
    /// it was read in this call (a resumed upload reads only its rest).
    pub fn sha256(&self) -> Option<Vec<u8>> {
        use sha2::Digest;
        let digest = self.digest.lock().unwrap_or_else(|e| e.into_inner());
        let d = digest.as_ref()?;
        (d.hashed_to == self.size.load(Ordering::Acquire))
            .then(|| d.hasher.clone().finalize().to_vec())
    }
}

/// The host side of a `source` resource: the file an upload sends.
pub struct Source {
    file: Arc<File>,
    size: u64,
    modified: Option<SystemTime>,
    progress: Arc<UploadProgress>,
}

impl Source {
    /// An upload source of `size` bytes last modified at `modified`: what
    /// the file was when the job recorded it. A file that no longer has that
    /// size or modification time fails the upload.
    pub fn new(file: Arc<File>, size: u64, modified: Option<SystemTime>) -> Source {
        let progress = UploadProgress::default();
        progress.size.store(size, Ordering::Release);
        Source {
            file,
            size,
            modified,
            progress: Arc::new(progress),
        }
    }

    /// Keeps a SHA-256 of the bytes the plugin reads, for the reply
    /// processor ([`UploadProgress::sha256`]).
    pub fn with_digest(self) -> Source {
        use sha2::Digest;
        *self
            .progress
            .digest
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(SourceDigest {
            hasher: sha2::Sha256::new(),
            hashed_to: 0,
        });
        self
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn progress(&self) -> Arc<UploadProgress> {
        self.progress.clone()
    }

    /// The whole source, read into memory (for small files only).
    pub fn read_all(&self) -> Result<Vec<u8>, TransferError> {
        let mut data = vec![0u8; usize::try_from(self.size).unwrap_or(usize::MAX)];
        self.file
            .read_exact_at(&mut data, 0)
            .map_err(|e| TransferError::local_file("read-failed", &e, "cannot read the reply"))?;
        Ok(data)
    }

    /// `source.record-session`: the server's session for this upload.
    pub fn record_session(&self, session: String) {
        *self
            .progress
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(session);
    }

    /// `source.acknowledge`: the server holds the first `offset` bytes (never
    /// more than the source, never less than acknowledged before).
    pub fn acknowledge(&self, offset: u64) {
        self.progress
            .acknowledged
            .fetch_max(offset.min(self.size), Ordering::AcqRel);
    }

    /// `source.open`: a stream from `offset`.
    pub fn open(&self, offset: u64) -> Result<FileSourceStream, TransferError> {
        if offset > self.size {
            return Err(TransferError::fatal(
                ErrorContext::Plugin,
                "bad-offset",
                format!(
                    "the plugin opened the source at {offset}, past its size {}",
                    self.size
                ),
            ));
        }
        Ok(FileSourceStream {
            file: self.file.clone(),
            position: offset,
            size: self.size,
            modified: self.modified,
            progress: self.progress.clone(),
        })
    }
}

/// An input stream over an upload file, from an offset to the recorded size.
pub struct FileSourceStream {
    file: Arc<File>,
    position: u64,
    size: u64,
    modified: Option<SystemTime>,
    progress: Arc<UploadProgress>,
}

impl FileSourceStream {
    fn fail(&self, error: TransferError) -> StreamError {
        let message = error.message.clone();
        *self
            .progress
            .local_error
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(error);
        StreamError::LastOperationFailed(wasmtime::format_err!("{message}"))
    }
}

#[async_trait::async_trait]
impl InputStream for FileSourceStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let changed = |what: &str| {
            TransferError::fatal(
                ErrorContext::LocalFile,
                "local-file-changed",
                format!("the upload source {what}"),
            )
        };
        let (length, modified) = match self.file.metadata() {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(e) => {
                return Err(self.fail(TransferError::local_file(
                    "read-failed",
                    &e,
                    "cannot read the upload source",
                )));
            }
        };
        if length != self.size {
            return Err(self.fail(changed(&format!(
                "changed size from {} to {length} bytes",
                self.size
            ))));
        }
        if self.modified.is_some() && modified != self.modified {
            return Err(self.fail(changed("was modified")));
        }
        if self.position >= self.size {
            return Err(StreamError::Closed);
        }
        let wanted = size
            .min(SOURCE_READ)
            .min(usize::try_from(self.size - self.position).unwrap_or(SOURCE_READ));
        let mut buffer = vec![0u8; wanted];
        let n = match self.file.read_at(&mut buffer, self.position) {
            Ok(0) => return Err(self.fail(changed("ended before its recorded size"))),
            Ok(n) => n,
            Err(e) => {
                return Err(self.fail(TransferError::local_file(
                    "read-failed",
                    &e,
                    "cannot read the upload source",
                )));
            }
        };
        buffer.truncate(n);
        self.progress.hash(self.position, &buffer);
        self.position += n as u64;
        Ok(Bytes::from(buffer))
    }
}

#[async_trait::async_trait]
impl Pollable for FileSourceStream {
    async fn ready(&mut self) {}
}
