//! The `wasmbox.*` annotations of a bundle (or an image, or a pod): their names, and how they
//! change a policy.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{
    MAX_CONCURRENCY, Policy, TlsFiles, check_header_size, normalize_guest_path, parse_duration,
    parse_size,
};
use crate::net::Grant;

/// Annotation: comma-separated [`Grant`]s the guest may connect to.
pub const ANNOTATION_NET_CONNECT: &str = "wasmbox.net.connect";
/// Annotation: comma-separated [`Grant`]s the guest may listen on.
pub const ANNOTATION_NET_LISTEN: &str = "wasmbox.net.listen";
/// Annotation: comma-separated [`crate::http::HttpGrant`]s the guest may send HTTP requests to.
pub const ANNOTATION_HTTP_ALLOW: &str = "wasmbox.http.allow";
/// Annotation: `true` lets the guest resolve host names.
pub const ANNOTATION_NET_DNS: &str = "wasmbox.net.dns";
/// Annotation: wall-clock deadline (`30s`, `500ms`, or plain seconds).
pub const ANNOTATION_TIMEOUT: &str = "wasmbox.timeout";
/// Annotation: where an HTTP component is served (`HOST:PORT`, default [`DEFAULT_HTTP_ADDR`]).
pub const ANNOTATION_HTTP_ADDR: &str = "wasmbox.http.addr";
/// Annotation: requests an HTTP component handles at once.
pub const ANNOTATION_HTTP_MAX_CONCURRENCY: &str = "wasmbox.http.max-concurrency";
/// Annotation: how long one request may run.
pub const ANNOTATION_HTTP_REQUEST_TIMEOUT: &str = "wasmbox.http.request-timeout";
/// Annotation: how long a drain waits for requests in flight.
pub const ANNOTATION_HTTP_DRAIN_TIMEOUT: &str = "wasmbox.http.drain-timeout";
/// Annotation: how long a client has to send a request head.
pub const ANNOTATION_HTTP_HEADER_TIMEOUT: &str = "wasmbox.http.header-timeout";
/// Annotation: how long an idle connection, or a request stalled on its client, lasts.
pub const ANNOTATION_HTTP_IDLE_TIMEOUT: &str = "wasmbox.http.idle-timeout";
/// Annotation: connections open at once.
pub const ANNOTATION_HTTP_MAX_CONNECTIONS: &str = "wasmbox.http.max-connections";
/// Annotation: bytes a request body may hold.
pub const ANNOTATION_HTTP_MAX_BODY_SIZE: &str = "wasmbox.http.max-body-size";
/// Annotation: bytes of a request head.
pub const ANNOTATION_HTTP_MAX_HEADER_SIZE: &str = "wasmbox.http.max-header-size";
/// Annotation: bytes of memory one request's instance may use.
pub const ANNOTATION_HTTP_REQUEST_MEMORY: &str = "wasmbox.http.request-memory";
/// Annotation: the guest path of the PEM certificate chain to serve HTTPS with (with
/// [`ANNOTATION_HTTP_TLS_KEY`]); read beneath the container's grants.
pub const ANNOTATION_HTTP_TLS_CERT: &str = "wasmbox.http.tls-cert";
/// Annotation: where Prometheus metrics are served (`HOST:PORT`); in a pod, one endpoint for all
/// its HTTP containers, labelled by container name.
pub const ANNOTATION_METRICS_ADDR: &str = "wasmbox.metrics.addr";
/// Annotation: the guest path of the PEM private key of [`ANNOTATION_HTTP_TLS_CERT`].
pub const ANNOTATION_HTTP_TLS_KEY: &str = "wasmbox.http.tls-key";

/// The comma-separated values of annotation `key` (none when it is absent), each parsed as `T`;
/// the error names the annotation.
fn list<T: std::str::FromStr>(ann: &HashMap<String, String>, key: &str) -> Result<Vec<T>, String>
where
    T::Err: std::fmt::Display,
{
    let Some(v) = ann.get(key) else {
        return Ok(Vec::new());
    };
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<T>().map_err(|e| format!("annotation {key}: {e}")))
        .collect()
}

/// Applies the `wasmbox.*` annotations to a policy.
pub fn apply_annotations(policy: &mut Policy, ann: &HashMap<String, String>) -> Result<(), String> {
    policy
        .net
        .connect
        .extend(list::<Grant>(ann, ANNOTATION_NET_CONNECT)?);
    policy
        .net
        .listen
        .extend(list::<Grant>(ann, ANNOTATION_NET_LISTEN)?);
    policy
        .net
        .http
        .extend(list::<crate::http::HttpGrant>(ann, ANNOTATION_HTTP_ALLOW)?);
    if let Some(v) = ann.get(ANNOTATION_NET_DNS) {
        policy.net.dns = match v.as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(format!(
                    "annotation {ANNOTATION_NET_DNS}: expected true or false, got {v:?}"
                ));
            }
        };
    }
    if let Some(v) = ann.get(ANNOTATION_TIMEOUT) {
        policy.limits.timeout = Some(seconds(ANNOTATION_TIMEOUT, v)?);
    }
    if let Some(v) = ann.get(ANNOTATION_HTTP_ADDR) {
        policy.serve.addr = v.trim().parse().map_err(|_| {
            format!("annotation {ANNOTATION_HTTP_ADDR}: expected HOST:PORT (e.g. 0.0.0.0:8080), got {v:?}")
        })?;
    }
    if let Some(v) = ann.get(ANNOTATION_HTTP_MAX_CONCURRENCY) {
        policy.serve.max_concurrency = v
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=MAX_CONCURRENCY).contains(n))
            .ok_or_else(|| {
                format!(
                    "annotation {ANNOTATION_HTTP_MAX_CONCURRENCY}: expected 1 to {MAX_CONCURRENCY}, got {v:?}"
                )
            })?;
    }
    let serve = &mut policy.serve;
    if let Some(v) = ann.get(ANNOTATION_HTTP_REQUEST_TIMEOUT) {
        serve.request_timeout = seconds(ANNOTATION_HTTP_REQUEST_TIMEOUT, v)?;
    }
    if let Some(v) = ann.get(ANNOTATION_HTTP_DRAIN_TIMEOUT) {
        serve.drain_timeout = seconds(ANNOTATION_HTTP_DRAIN_TIMEOUT, v)?;
    }
    if let Some(v) = ann.get(ANNOTATION_HTTP_HEADER_TIMEOUT) {
        serve.header_timeout = seconds(ANNOTATION_HTTP_HEADER_TIMEOUT, v)?;
    }
    if let Some(v) = ann.get(ANNOTATION_HTTP_IDLE_TIMEOUT) {
        serve.idle_timeout = seconds(ANNOTATION_HTTP_IDLE_TIMEOUT, v)?;
    }
    if let Some(v) = ann.get(ANNOTATION_HTTP_MAX_CONNECTIONS) {
        serve.max_connections = Some(v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!("annotation {ANNOTATION_HTTP_MAX_CONNECTIONS}: expected a number of connections, got {v:?}")
        })?);
    }
    let size = |key: &str, v: &str| parse_size(v).map_err(|e| format!("annotation {key}: {e}"));
    if let Some(v) = ann.get(ANNOTATION_HTTP_MAX_BODY_SIZE) {
        serve.max_body_size = Some(size(ANNOTATION_HTTP_MAX_BODY_SIZE, v)?);
    }
    if let Some(v) = ann.get(ANNOTATION_HTTP_MAX_HEADER_SIZE) {
        serve.max_header_size = size(ANNOTATION_HTTP_MAX_HEADER_SIZE, v).and_then(|n| {
            check_header_size(n)
                .map_err(|e| format!("annotation {ANNOTATION_HTTP_MAX_HEADER_SIZE}: {e}"))
        })?;
    }
    if let Some(v) = ann.get(ANNOTATION_HTTP_REQUEST_MEMORY) {
        serve.request_memory = Some(size(ANNOTATION_HTTP_REQUEST_MEMORY, v)?);
    }
    if let Some(v) = ann.get(ANNOTATION_METRICS_ADDR) {
        serve.metrics_addr = Some(v.trim().parse().map_err(|_| {
            format!("annotation {ANNOTATION_METRICS_ADDR}: expected HOST:PORT (e.g. 0.0.0.0:9090), got {v:?}")
        })?);
    }
    if let Some(tls) = tls_annotations(ann)? {
        serve.tls = Some(tls);
    }
    Ok(())
}

/// The TLS files the annotations name: both or neither, each an absolute guest path.
fn tls_annotations(ann: &HashMap<String, String>) -> Result<Option<TlsFiles>, String> {
    let path = |key: &str| -> Result<Option<PathBuf>, String> {
        let Some(v) = ann.get(key) else {
            return Ok(None);
        };
        let v = v.trim();
        match normalize_guest_path(v) {
            Some(p) if v.starts_with('/') && p != "/" => Ok(Some(PathBuf::from(p))),
            _ => Err(format!(
                "annotation {key}: expected an absolute path to a file in the container, without '..', got {v:?}"
            )),
        }
    };
    match (
        path(ANNOTATION_HTTP_TLS_CERT)?,
        path(ANNOTATION_HTTP_TLS_KEY)?,
    ) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert,
            key,
            in_guest: true,
        })),
        (Some(_), None) => Err(format!(
            "annotation {ANNOTATION_HTTP_TLS_CERT} needs {ANNOTATION_HTTP_TLS_KEY}: HTTPS takes a certificate and its key"
        )),
        (None, Some(_)) => Err(format!(
            "annotation {ANNOTATION_HTTP_TLS_KEY} needs {ANNOTATION_HTTP_TLS_CERT}: HTTPS takes a certificate and its key"
        )),
    }
}

/// An annotation's duration (`30s`, `500ms`, or plain seconds), range-checked as every deadline
/// is.
fn seconds(key: &str, v: &str) -> Result<Duration, String> {
    parse_duration(v).map_err(|e| format!("annotation {key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        DEFAULT_REQUEST_TIMEOUT, ServeConfig, default_max_connections, max_outgoing_connections,
    };

    #[test]
    fn serving_limits_have_defaults_and_come_from_annotations() {
        let d = ServeConfig::default();
        assert_eq!(d.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(d.header_timeout, Duration::from_secs(30));
        assert_eq!(d.max_header_size, 64 << 10);
        assert_eq!(
            (d.max_connections, d.max_body_size, d.request_memory),
            (None, None, None)
        );
        // Half and a quarter of what a reserve leaves: 1024 descriptors give 480 and 240.
        assert_eq!(default_max_connections(1024), 480);
        assert_eq!(max_outgoing_connections(1024), 240);
        assert_eq!(default_max_connections(10), 16);

        let mut p = Policy::default();
        let ann: HashMap<String, String> = [
            (ANNOTATION_HTTP_REQUEST_TIMEOUT, "2.5"),
            (ANNOTATION_HTTP_HEADER_TIMEOUT, "5s"),
            (ANNOTATION_HTTP_IDLE_TIMEOUT, "1500ms"),
            (ANNOTATION_HTTP_MAX_CONNECTIONS, "40"),
            (ANNOTATION_HTTP_MAX_BODY_SIZE, "1m"),
            (ANNOTATION_HTTP_MAX_HEADER_SIZE, "16k"),
            (ANNOTATION_HTTP_REQUEST_MEMORY, "32m"),
            (ANNOTATION_METRICS_ADDR, "0.0.0.0:9090"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        apply_annotations(&mut p, &ann).unwrap();
        let s = &p.serve;
        assert_eq!(s.request_timeout, Duration::from_millis(2500));
        assert_eq!(s.header_timeout, Duration::from_secs(5));
        assert_eq!(s.idle_timeout, Duration::from_millis(1500));
        assert_eq!(s.max_connections, Some(40));
        assert_eq!(s.max_body_size, Some(1 << 20));
        assert_eq!(s.max_header_size, 16 << 10);
        assert_eq!(s.request_memory, Some(32 << 20));
        assert_eq!(s.metrics_addr, Some("0.0.0.0:9090".parse().unwrap()));

        for (key, bad, why) in [
            (
                ANNOTATION_HTTP_MAX_CONNECTIONS,
                "0",
                "number of connections",
            ),
            (ANNOTATION_HTTP_MAX_HEADER_SIZE, "4k", "out of range"),
            (ANNOTATION_HTTP_MAX_HEADER_SIZE, "2g", "out of range"),
            (ANNOTATION_HTTP_MAX_BODY_SIZE, "lots", "not a size"),
            (ANNOTATION_HTTP_IDLE_TIMEOUT, "soon", "not a duration"),
            (ANNOTATION_METRICS_ADDR, "everywhere", "HOST:PORT"),
        ] {
            let ann = HashMap::from([(key.to_string(), bad.to_string())]);
            let e = apply_annotations(&mut Policy::default(), &ann).unwrap_err();
            assert!(e.contains(key) && e.contains(why), "{key}={bad}: {e}");
        }
    }

    #[test]
    fn tls_comes_from_both_annotations_as_guest_paths() {
        let ann = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut p = Policy::default();
        apply_annotations(
            &mut p,
            &ann(&[
                (ANNOTATION_HTTP_TLS_CERT, "/etc/tls/./tls.crt"),
                (ANNOTATION_HTTP_TLS_KEY, "/etc/tls/tls.key"),
            ]),
        )
        .unwrap();
        assert_eq!(
            p.serve.tls,
            Some(TlsFiles {
                cert: "/etc/tls/tls.crt".into(),
                key: "/etc/tls/tls.key".into(),
                in_guest: true,
            })
        );
        for (pairs, why) in [
            (
                &[(ANNOTATION_HTTP_TLS_CERT, "/c.pem")][..],
                "needs wasmbox.http.tls-key",
            ),
            (
                &[(ANNOTATION_HTTP_TLS_KEY, "/k.pem")][..],
                "needs wasmbox.http.tls-cert",
            ),
            (
                &[
                    (ANNOTATION_HTTP_TLS_CERT, "/a/../../etc/shadow"),
                    (ANNOTATION_HTTP_TLS_KEY, "/k.pem"),
                ][..],
                "without '..'",
            ),
            (
                &[
                    (ANNOTATION_HTTP_TLS_CERT, "c.pem"),
                    (ANNOTATION_HTTP_TLS_KEY, "/k.pem"),
                ][..],
                "absolute path",
            ),
        ] {
            let e = apply_annotations(&mut Policy::default(), &ann(pairs)).unwrap_err();
            assert!(e.contains(why), "{pairs:?}: {e}");
        }
    }
}
