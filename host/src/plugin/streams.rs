//! Bulk bytes stay on the host: the destination and upload-source resources.
//!
//! A plugin never sees a file. It gets a `destination` whose `begin` opens a
//! `wasi:io` output stream positioned where the host wants the body (the
//! resume offset, or zero for a restart), and a `source` whose `open` gives
//! an input stream over the upload file. Both are host objects, so a plugin
//! that splices an HTTP body into them moves bytes host-to-host without
//! copying them through its own memory.
//!
//! Writes are positional (`pwrite`) into a file the caller opened; what was
//! written is published in [`DownloadProgress`] for the job engine, which
//! decides when to sync and checkpoint.

use crate::error::{ErrorContext, TransferError};
use crate::plugin::transfer::RemoteInfo;
use bytes::Bytes;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, OutputStream, StreamError, StreamResult};

/// How much a plugin may write per `check-write` permit, and read per call.
const CHUNK: usize = 1 << 20;

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
}

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
        }
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
        Ok(FileSink {
            file: self.file.clone(),
            position,
            progress: self.progress.clone(),
            stop: self.stop.clone(),
        })
    }
}

/// An output stream writing at a position of a file.
pub struct FileSink {
    file: Arc<File>,
    position: u64,
    progress: Arc<DownloadProgress>,
    stop: Option<CancellationToken>,
}

#[async_trait::async_trait]
impl OutputStream for FileSink {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.stop.as_ref().is_some_and(|s| s.is_cancelled()) {
            return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "the transfer was stopped"
            )));
        }
        if let Err(e) = self.file.write_all_at(&bytes, self.position) {
            let error =
                TransferError::local_file("write-failed", &e, "cannot write the temporary file");
            *self
                .progress
                .local_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(error);
            return Err(StreamError::LastOperationFailed(e.into()));
        }
        self.position += bytes.len() as u64;
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

/// What an upload call did, visible while it runs.
#[derive(Debug, Default)]
pub struct UploadProgress {
    /// Bytes the server has durably received, as the plugin acknowledged.
    pub acknowledged: AtomicU64,
    /// The server's session, as the plugin recorded it.
    pub session: Mutex<Option<String>>,
    /// A failure of the host's own file (it changed, or cannot be read).
    pub local_error: Mutex<Option<TransferError>>,
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
        Source {
            file,
            size,
            modified,
            progress: Arc::new(UploadProgress::default()),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn progress(&self) -> Arc<UploadProgress> {
        self.progress.clone()
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
            .min(CHUNK)
            .min(usize::try_from(self.size - self.position).unwrap_or(CHUNK));
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
        self.position += n as u64;
        Ok(Bytes::from(buffer))
    }
}

#[async_trait::async_trait]
impl Pollable for FileSourceStream {
    async fn ready(&mut self) {}
}
