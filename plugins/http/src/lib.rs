//! Ferry's built-in transport for `http` and `https`.
//!
//! Downloads are the SDK's ready-made HTTP download: resume with `Range`
//! guarded by `If-Range` on the recorded validator, byte ranges cut out of
//! whole bodies for servers that ignore ranges, redirects up to the
//! operator's limit (the owner's headers and credentials never leave the
//! origin the job named), bodies stored as served and spliced into the
//! host's destination without passing through plugin memory. See
//! `ferry_guest_sdk::http::download` for the rules in full.
//!
//! Uploads (and upload-reply jobs) speak one of four protocols, chosen per
//! job with `ferry set JOB --protocol NAME` (API field `protocol`):
//!
//! | name | protocol | resumable |
//! |---|---|---|
//! | `tus` | tus 1.0: core, creation, termination, checksum when offered | yes, from the server's offset |
//! | `bits` | the BITS upload protocol (`BITS_POST` packets) | yes, from the server's received range |
//! | `put` | one `PUT` of the whole file | no: an interruption starts over |
//! | `post` | one `POST` of the whole file | no: an interruption starts over |
//!
//! Without a choice the plugin detects it (see [`protocol::detect`]): a
//! server that answers `OPTIONS` with `Tus-Version` speaks tus, one that
//! acknowledges a BITS `Ping` speaks BITS, any other gets a `PUT`.
//!
//! Request bodies (tus `PATCH`es, BITS fragments, single-shot bodies) go
//! chunked, without `Content-Length`: the HTTP client behind `wasi:http`
//! lets go of a body as soon as a declared length has been sent, and the
//! plugin's final flush of the body stream can then find it closed and fail
//! a request whose bytes all went out. Without a declared length the body
//! ends when the plugin finishes it.

mod bits;
mod protocol;
mod single;
mod tus;

use ferry_guest_sdk::{
    Destination, Download, DownloadRequest, JobContext, ReplySink, Source, TransferError, Upload,
    UploadReply, UploadRequest,
};

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

impl Upload for Http {
    fn upload(
        job: JobContext,
        request: UploadRequest,
        source: &Source,
    ) -> Result<(), TransferError> {
        protocol::upload(&job, &request, source, None)
    }

    fn cancel_upload(job: JobContext, url: String, session: String) -> Result<(), TransferError> {
        protocol::cancel(&job, &url, &session)
    }
}

impl UploadReply for Http {
    fn upload_with_reply(
        job: JobContext,
        request: UploadRequest,
        source: &Source,
        reply: &ReplySink,
    ) -> Result<(), TransferError> {
        protocol::upload(&job, &request, source, Some(reply))
    }
}

ferry_guest_sdk::export_download!(Http);
ferry_guest_sdk::export_upload_reply!(Http);
