//! A download plugin that lies about its bodies, so the tests can show the
//! host does not take a plugin's word that a body was whole.
//!
//! `liar://short/` announces a 10-byte resource, writes 3 bytes and returns
//! success; `liar://long/` announces 3 bytes and writes 10.

use ferry_guest_sdk::{
    Destination, Download, DownloadRequest, ErrorContext, JobContext, RemoteInfo, TransferError,
};

struct Liar;

impl Download for Liar {
    fn download(
        _job: JobContext,
        request: DownloadRequest,
        destination: &Destination,
    ) -> Result<(), TransferError> {
        let (announced, written): (u64, &[u8]) = if request.url.starts_with("liar://long/") {
            (3, b"0123456789")
        } else {
            (10, b"abc")
        };
        let info = RemoteInfo {
            size: Some(announced),
            validator: None,
            accepts_ranges: false,
            location: request.url.clone(),
        };
        let sink = destination.begin(&info, 0)?;
        sink.blocking_write_and_flush(written).map_err(|_| {
            TransferError::transient(
                ErrorContext::LocalFile,
                ferry_guest_sdk::ErrorCode::other("write-failed"),
                "cannot write",
            )
        })
    }
}

ferry_guest_sdk::export_download!(Liar);
