//! A hostile transport built against the frozen `ferry:transfer@0.1.0`,
//! whose host asks it at load time what it can do (`supported`). Its
//! answer never comes: it loops calling `is-cancelled()`, so it comes back
//! to the host on every turn and a deadline that host calls reset would
//! never stop it, and the daemon would never finish starting.

wit_bindgen::generate!({
    path: "../../../wit/0.1.0",
    world: "ferry:transfer/transport@0.1.0",
    generate_all,
});

use exports::ferry::transfer::transfers::Guest;
use ferry::transfer::host::{Destination, Source, is_cancelled};
use ferry::transfer::types::{
    Capabilities, DownloadRequest, ErrorClass, ErrorContext, RemoteInfo, TransferError,
    UploadOutcome, UploadRequest,
};

struct HostileLegacy;

fn refused() -> TransferError {
    TransferError {
        class: ErrorClass::Fatal,
        context: ErrorContext::Plugin,
        code: "unsupported".to_string(),
        http_status: None,
        message: "this plugin only misbehaves at load time".to_string(),
    }
}

impl Guest for HostileLegacy {
    fn supported() -> Capabilities {
        loop {
            if std::hint::black_box(is_cancelled()) && std::hint::black_box(false) {
                return Capabilities::DOWNLOAD;
            }
        }
    }

    fn probe(_url: String) -> Result<RemoteInfo, TransferError> {
        Err(refused())
    }

    fn download(
        _request: DownloadRequest,
        _destination: &Destination,
    ) -> Result<(), TransferError> {
        Err(refused())
    }

    fn upload(_request: UploadRequest, _source: &Source) -> Result<UploadOutcome, TransferError> {
        Err(refused())
    }

    fn cancel_upload(_url: String, _session: String) -> Result<(), TransferError> {
        Err(refused())
    }
}

export!(HostileLegacy);
