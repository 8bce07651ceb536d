//! Moving bytes through the host's `wasi:io` streams.
//!
//! Bulk bytes should not pass through plugin memory: [`splice`] moves them
//! from an input stream (an HTTP body, an upload source, a reply body)
//! straight into an output stream (a destination, a reply sink), checking
//! for cancellation between chunks. [`write_all`] and [`read_to_end`] are
//! for the small amounts a plugin makes or inspects itself.

use crate::{ErrorContext, InputStream, OutputStream, StreamError, TransferError, check_cancelled};

/// The most `blocking-write-and-flush` accepts at once.
const WRITE_CHUNK: usize = 4096;
/// How much one read asks for.
const READ_CHUNK: u64 = 64 * 1024;

/// What one [`splice`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spliced {
    /// The bytes moved into the output stream.
    pub moved: u64,
    /// Whether the input stream ended (was closed) before `limit` bytes had
    /// been moved.
    pub ended: bool,
}

/// Moves up to `limit` bytes from `input` into `output`, chunk by chunk,
/// until `limit` bytes have moved or `input` ends, then flushes `output`.
/// An `output` closed by its reader once all `limit` bytes went out (an HTTP
/// request body whose declared length was reached) counts as flushed.
///
/// Fails with [`TransferError::cancelled`] when the host asks the call to
/// stop, and with a transient `connection-dropped` when either stream fails
/// (an HTTP body that broke off, a destination that cannot be written).
pub fn splice(
    output: &OutputStream,
    input: &InputStream,
    limit: u64,
) -> Result<Spliced, TransferError> {
    let mut moved = 0u64;
    let mut ended = false;
    while moved < limit {
        check_cancelled()?;
        match output.blocking_splice(input, limit - moved) {
            Ok(n) => moved += n,
            Err(StreamError::Closed) => {
                ended = true;
                break;
            }
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(TransferError::connection_dropped(format!(
                    "the stream broke off after {moved} bytes: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    match output.blocking_flush() {
        Ok(()) => {}
        // Every byte asked for went out and the other side took the stream
        // back (an HTTP body whose declared length was reached): that is done.
        Err(StreamError::Closed) if moved == limit => {}
        Err(error) => return Err(write_failed(error)),
    }
    Ok(Spliced { moved, ended })
}

/// Waits until everything written to `output` has been handed over.
///
/// A stream that fails or closes is a transient `write-failed` error of the
/// local file.
pub fn flush(output: &OutputStream) -> Result<(), TransferError> {
    output.blocking_flush().map_err(write_failed)
}

fn write_failed(error: StreamError) -> TransferError {
    let why = match error {
        StreamError::Closed => "the stream was closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    };
    TransferError::transient(
        ErrorContext::LocalFile,
        crate::ErrorCode::other("write-failed"),
        format!("writing to the host's stream failed: {why}"),
    )
}

/// Moves everything `input` has into `output`; returns the bytes moved.
pub fn splice_to_end(output: &OutputStream, input: &InputStream) -> Result<u64, TransferError> {
    splice(output, input, u64::MAX).map(|spliced| spliced.moved)
}

/// Drops the next `count` bytes of `input` without reading them into plugin
/// memory; returns how many were dropped (fewer when `input` ended).
pub fn skip(input: &InputStream, count: u64) -> Result<u64, TransferError> {
    let mut skipped = 0u64;
    while skipped < count {
        check_cancelled()?;
        match input.blocking_skip(count - skipped) {
            Ok(n) => skipped += n,
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(TransferError::connection_dropped(format!(
                    "the stream broke off after {skipped} bytes: {}",
                    e.to_debug_string()
                )));
            }
        }
    }
    Ok(skipped)
}

/// Whether `input` has ended: reads at most one byte, which is lost.
pub fn at_end(input: &InputStream) -> Result<bool, TransferError> {
    match input.blocking_read(1) {
        Ok(bytes) => Ok(bytes.is_empty()),
        Err(StreamError::Closed) => Ok(true),
        Err(StreamError::LastOperationFailed(e)) => Err(TransferError::connection_dropped(
            format!("the stream broke off at its end: {}", e.to_debug_string()),
        )),
    }
}

/// Writes all of `bytes` into `output` and flushes it.
///
/// A stream that fails or closes is a transient `write-failed` error of the
/// local file.
pub fn write_all(output: &OutputStream, bytes: &[u8]) -> Result<(), TransferError> {
    for chunk in bytes.chunks(WRITE_CHUNK) {
        check_cancelled()?;
        output
            .blocking_write_and_flush(chunk)
            .map_err(write_failed)?;
    }
    Ok(())
}

/// Reads `input` to its end into memory, refusing more than `limit` bytes
/// with a fatal `too-large` error.
pub fn read_to_end(input: &InputStream, limit: usize) -> Result<Vec<u8>, TransferError> {
    let mut data = Vec::new();
    loop {
        check_cancelled()?;
        match input.blocking_read(READ_CHUNK) {
            Ok(chunk) => {
                data.extend_from_slice(&chunk);
                if data.len() > limit {
                    return Err(TransferError::fatal(
                        ErrorContext::Plugin,
                        crate::ErrorCode::other("too-large"),
                        format!("the stream holds more than {limit} bytes"),
                    ));
                }
            }
            Err(StreamError::Closed) => return Ok(data),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(TransferError::connection_dropped(format!(
                    "the stream broke off after {} bytes: {}",
                    data.len(),
                    e.to_debug_string()
                )));
            }
        }
    }
}
