//! A native HTTP hello server for `bench/http.sh`: what hyper on tokio does on this machine with
//! no sandbox, no wasm and no per-request instance. It answers every request as
//! `examples/http-hello` answers `/` (`hello from wasm\n`, text/plain), over HTTP/1.1 keep-alive
//! and h2c, with as many worker threads as wasmbox's executor has.
//!
//! With `--sink` it is instead the benchmark's OTLP/HTTP receiver: it reads each export whole
//! and answers 200 with an empty body (an export that was taken in full), keeping nothing, as
//! cheaply as a collector can.
//!
//! Usage: hyper-hello [--sink] HOST:PORT

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;

fn main() -> std::io::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let sink = args.first().is_some_and(|a| a == "--sink");
    if sink {
        args.remove(0);
    }
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let rt = if sink {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    };
    rt.block_on(serve(&addr, sink))
}

async fn serve(addr: &str, sink: bool) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    if sink {
                        // The export, read and dropped.
                        let _ = http_body_util::BodyExt::collect(req.into_body()).await;
                        return Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())));
                    }
                    let mut resp =
                        hyper::Response::new(Full::new(Bytes::from_static(b"hello from wasm\n")));
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, Infallible>(resp)
                },
            );
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
    }
}
