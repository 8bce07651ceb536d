//! A small reply processor for Ferry's upload-reply tests.
//!
//! It reads the reply body whole and turns it into its upper-cased self,
//! both as the reply data it returns and as the reply file it writes, so a
//! test can tell processed data from the raw reply. It reads at most 4 MiB,
//! more than the host accepts as reply data (1 MiB), so the host's own cap is
//! what a test of a larger reply sees; a body above 4 MiB is a fatal
//! `reply-too-large` (context `plugin`) of its own, as the host's is.

use ferry_guest_sdk::{
    ErrorClass, ErrorContext, InputStream, ReplyContext, ReplyFile, ReplyHead, ReplyProcessor,
    TransferError, stream,
};

/// The most of a reply body it holds in memory.
const BODY_LIMIT: usize = 4 << 20;

struct Upper;

impl ReplyProcessor for Upper {
    fn process(
        context: ReplyContext,
        _head: ReplyHead,
        body: InputStream,
        file: &ReplyFile,
    ) -> Result<Vec<u8>, TransferError> {
        let mut data = stream::read_to_end(&body, BODY_LIMIT).map_err(|e| {
            if e.is_transient() {
                e
            } else {
                TransferError::other(
                    ErrorClass::Fatal,
                    ErrorContext::Plugin,
                    "reply-too-large",
                    format!(
                        "the reply of {} is larger than {BODY_LIMIT} bytes",
                        context.url
                    ),
                )
            }
        })?;
        data.make_ascii_uppercase();
        let sink = file.open()?;
        stream::write_all(&sink, &data)?;
        Ok(data)
    }
}

ferry_guest_sdk::export_reply_processor!(Upper);
