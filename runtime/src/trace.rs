//! OpenTelemetry traces, exported over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: a server span per request served, a client span
//! per outgoing `wasi:http` request (its `traceparent` carried to the server it reaches, so a
//! trace crosses the guest), and spans for loading a component and for the shim's create and
//! start. `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)` and the
//! batch processor's `OTEL_BSP_*` variables are honoured by the SDK.
//!
//! With neither variable set, [`init`] starts nothing and every span below is `None`: no thread,
//! no buffer, no header parsed.

use std::sync::OnceLock;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

mod background;
mod client;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
/// wasmbox's tracer of [`PROVIDER`], made once (a tracer per span would be an allocation each).
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The variables that turn tracing on.
const ENDPOINTS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// Starts the exporter if an OTLP endpoint is set; call once, early, from the process's main
/// thread (the exporter's thread must not carry a guest thread's filter). Returns whether
/// tracing is on, or why the exporter could not be made.
pub fn init() -> Result<bool, String> {
    if !ENDPOINTS
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|e| !e.is_empty()))
    {
        return Ok(false);
    }
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client::PlainHttp::default())
        .build()
        .map_err(|e| format!("the OTLP trace exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("wasmbox");
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(background::Background::new(exporter))
        .with_resource(resource.build())
        .build();
    use opentelemetry::trace::TracerProvider as _;
    let _ = TRACER.set(provider.tracer("wasmbox"));
    let _ = PROVIDER.set(provider);
    Ok(true)
}

/// Exports what is buffered and stops the exporter (before the process exits).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}

fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// An operation's span (loading, the shim's create or start): ended when dropped, marked as an
/// error by [`Operation::fail`].
pub struct Operation(Option<Context>);

impl Operation {
    /// Starts span `name` with `attributes`, if tracing is on.
    pub fn start(name: &'static str, attributes: &[(&'static str, String)]) -> Self {
        Self(tracer().map(|t| {
            let span = t
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .with_attributes(
                    attributes
                        .iter()
                        .map(|(k, v)| KeyValue::new(*k, v.clone()))
                        .collect::<Vec<_>>(),
                )
                .start(t);
            Context::current().with_span(span)
        }))
    }

    /// Adds an attribute.
    pub fn set(&self, key: &'static str, value: String) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks it failed, with `why`.
    pub fn fail(&self, why: &str) {
        if let Some(cx) = &self.0 {
            cx.span().set_status(Status::error(why.to_string()));
        }
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        if let Some(cx) = &self.0 {
            cx.span().end();
        }
    }
}

/// What the HTTP conventions call a method nobody knows.
const OTHER: &str = "_OTHER";

/// `http.request.method`: one of the methods of RFC 9110 and PATCH, else `_OTHER` (the
/// conventions' answer to methods a client may invent, which also keeps a span's name from
/// carrying whatever a client sent).
fn known_method(m: &http::Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN
        .into_iter()
        .find(|k| *k == m.as_str())
        .unwrap_or(OTHER)
}

/// A span's name: its method, or `HTTP` for one nobody knows.
fn span_name(method: &'static str) -> &'static str {
    if method == OTHER { "HTTP" } else { method }
}

/// A request's server span, child of the `traceparent` it came with.
pub(crate) struct ServerSpan(Context);

impl ServerSpan {
    /// The span of request `req`, if tracing is on.
    pub(crate) fn start<B>(
        req: &hyper::Request<B>,
        scheme: &'static str,
        port: u16,
    ) -> Option<Self> {
        let tracer = tracer()?;
        // A request without a `traceparent` starts a trace: nothing to extract.
        let parent = if req.headers().contains_key("traceparent") {
            TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()))
        } else {
            Context::new()
        };
        let method = known_method(req.method());
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("url.path", req.uri().path().to_string()),
            KeyValue::new("url.scheme", scheme),
            KeyValue::new("server.port", i64::from(port)),
            KeyValue::new(
                "network.protocol.version",
                match req.version() {
                    hyper::Version::HTTP_2 => "2",
                    hyper::Version::HTTP_10 => "1.0",
                    _ => "1.1",
                },
            ),
        ];
        if let Some(q) = req.uri().query() {
            attributes.push(KeyValue::new("url.query", q.to_string()));
        }
        if method == OTHER {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                req.method().as_str().to_string(),
            ));
        }
        if let Some(ua) = req
            .headers()
            .get(hyper::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new("user_agent.original", ua.to_string()));
        }
        let span = tracer
            .span_builder(span_name(method))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, &parent);
        Some(Self(parent.with_span(span)))
    }

    /// The context its outgoing requests are children of.
    pub(crate) fn context(&self) -> Context {
        self.0.clone()
    }

    /// Ends it with the response's status (5xx marks it an error, as the conventions say).
    pub(crate) fn end(self, status: u16) {
        let span = self.0.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// An outgoing request's client span, child of `parent`; its `traceparent` goes into `headers`.
pub(crate) struct ClientSpan(Context);

impl ClientSpan {
    pub(crate) fn start(
        parent: &Context,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut http::HeaderMap,
    ) -> Option<Self> {
        let tracer = tracer()?;
        let known = known_method(method);
        let mut attributes = vec![
            KeyValue::new("http.request.method", known),
            KeyValue::new("url.full", uri.to_string()),
        ];
        if let Some(host) = uri.host() {
            attributes.push(KeyValue::new("server.address", host.to_string()));
        }
        if let Some(port) = uri.port_u16() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        if known == OTHER {
            attributes.push(KeyValue::new(
                "http.request.method_original",
                method.as_str().to_string(),
            ));
        }
        let span = tracer
            .span_builder(span_name(known))
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        let cx = parent.with_span(span);
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
        Some(Self(cx))
    }

    /// Ends it with the response's status, or the error that stopped it.
    pub(crate) fn end(self, outcome: Result<u16, String>) {
        let span = self.0.span();
        match outcome {
            Ok(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 400 {
                    span.set_attribute(KeyValue::new("error.type", status.to_string()));
                    span.set_status(Status::error(""));
                }
            }
            Err(why) => {
                span.set_attribute(KeyValue::new("error.type", why.clone()));
                span.set_status(Status::error(why));
            }
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_as_the_http_conventions_say() {
        for m in ["GET", "POST", "PATCH", "OPTIONS"] {
            let method = http::Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(known_method(&method), m);
            assert_eq!(span_name(known_method(&method)), m);
        }
        let invented = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(known_method(&invented), "_OTHER");
        assert_eq!(span_name(known_method(&invented)), "HTTP");
    }
}
