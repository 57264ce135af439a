//! The `/metrics` endpoint: HTTP/1.1 on a listener of its own, served from one thread. What a
//! scraper can make it hold is bounded: a few connections at once, a deadline for each, and
//! nothing read from a request but its head.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;

/// What a scrape answers: the metrics as OpenMetrics text.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Scrapes served at once; more wait in the kernel's accept queue.
const CONNECTIONS: usize = 8;
/// How long one connection may last, its head and the response included.
const DEADLINE: Duration = Duration::from_secs(10);
/// The OpenMetrics text format's media type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` with what `metrics` renders on `listener`, from a thread of its own.
pub fn start(metrics: Render, listener: std::net::TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("wasmbox-metrics".into())
        .spawn(move || rt.block_on(serve(metrics, listener)))
        .map(drop)
}

async fn serve(metrics: Render, listener: std::net::TcpListener) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let open = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&metrics, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(DEADLINE)
                .max_buf_size(16 << 10)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(DEADLINE, conn).await;
        });
    }
}

fn answer<B>(metrics: &Render, req: &hyper::Request<B>) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET | &hyper::Method::HEAD, "/metrics") => (200, CONTENT_TYPE, metrics()),
        (_, "/metrics") => (405, "text/plain", "GET /metrics\n".to_string()),
        _ => (404, "text/plain", "metrics are at /metrics\n".to_string()),
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("a valid status");
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}
