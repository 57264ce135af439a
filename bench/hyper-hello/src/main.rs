//! A native HTTP hello server for `bench/http.sh`: what hyper on tokio does on this machine with
//! no sandbox, no wasm and no per-request instance. It answers every request as
//! `examples/http-hello` answers `/` (`hello from wasm\n`, text/plain), over HTTP/1.1 keep-alive
//! and h2c, with as many worker threads as wasmbox's executor has.
//!
//! Usage: hyper-hello HOST:PORT

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(serve(&addr))
}

async fn serve(addr: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                let mut resp =
                    hyper::Response::new(Full::new(Bytes::from_static(b"hello from wasm\n")));
                resp.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("text/plain"),
                );
                Ok::<_, Infallible>(resp)
            });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}
