//! Ferry's built-in transport for `http` and `https` downloads.
//!
//! It is the SDK's ready-made HTTP download and nothing else: resume with
//! `Range` guarded by `If-Range` on the recorded validator, byte ranges cut
//! out of whole bodies for servers that ignore ranges, redirects up to the
//! operator's limit (the owner's headers and credentials never leave the
//! origin the job named), bodies stored as served and spliced into the
//! host's destination without passing through plugin memory. See
//! `ferry_guest_sdk::http::download` for the rules in full.

use ferry_guest_sdk::{Destination, Download, DownloadRequest, JobContext, TransferError};

struct Http;

impl Download for Http {
    fn download(
        job: JobContext,
        request: DownloadRequest,
        destination: &Destination,
    ) -> Result<(), TransferError> {
        ferry_guest_sdk::http::download(&job, &request, destination)
    }
}

ferry_guest_sdk::export_download!(Http);
