//! A small reply processor for Ferry's upload-reply tests.
//!
//! It turns a reply into its body upper-cased, both as the reply data and as
//! the reply file, so a test can tell processed data from the raw reply.

use ferry_guest_sdk::types::{ErrorContext, RemoteInfo, UploadReply};
use ferry_guest_sdk::{Destination, ReplyProcessor, TransferError};

/// The most `blocking-write-and-flush` takes at once.
const WRITE_LIMIT: usize = 4096;

struct Upper;

impl ReplyProcessor for Upper {
    fn process(reply: UploadReply, file: &Destination) -> Result<Vec<u8>, TransferError> {
        let data = reply.body.to_ascii_uppercase();
        let info = RemoteInfo {
            size: Some(data.len() as u64),
            validator: None,
            accepts_ranges: false,
            location: String::new(),
        };
        let sink = file.begin(&info, 0)?;
        for chunk in data.chunks(WRITE_LIMIT) {
            sink.blocking_write_and_flush(chunk).map_err(|_| {
                TransferError::transient(
                    ErrorContext::LocalFile,
                    "write-failed",
                    "the reply file cannot be written",
                )
            })?;
        }
        Ok(data)
    }
}

ferry_guest_sdk::export_reply_processor!(Upper);
