//! A component from the future: it exports `ferry:transfer/download@1.0.0`,
//! a major version no host of today knows, so loading it must fail with an
//! error that names the version.

wit_bindgen::generate!({
    inline: "
        package ferry:transfer@1.0.0;
        interface download {
            download: func(url: string) -> result<_, string>;
        }
        world downloader {
            export download;
        }
    ",
    world: "ferry:transfer/downloader@1.0.0",
});

struct FromTheFuture;

impl exports::ferry::transfer::download::Guest for FromTheFuture {
    fn download(url: String) -> Result<(), String> {
        Err(format!("{url}: this plugin comes from the future"))
    }
}

export!(FromTheFuture);
