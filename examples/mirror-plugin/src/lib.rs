//! `mirror://HOST:PORT/PATH` downloads `http://HOST:PORT/PATH`.
use ferry_guest_sdk::{Destination, Download, DownloadRequest, JobContext, TransferError};

struct Mirror;

impl Download for Mirror {
    fn download(
        job: JobContext,
        request: DownloadRequest,
        destination: &Destination,
    ) -> Result<(), TransferError> {
        let url = request.url.replacen("mirror://", "http://", 1);
        ferry_guest_sdk::http::download(&job, &DownloadRequest { url, ..request }, destination)
    }
}

ferry_guest_sdk::export_download!(Mirror);
