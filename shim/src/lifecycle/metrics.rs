//! A pod's metrics endpoint: the HTTP containers of a shim that name the same
//! `wasmbox.metrics.addr` share one endpoint, bound by the first of them in the pod's network
//! namespace and labelled by container name, so a scrape of the pod's IP covers them all, as
//! for any pod. A container in a network namespace of its own gets an endpoint of its own there.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use oci_spec::runtime::Spec;
use wasmbox_runtime::metrics::Metrics;
use wasmbox_runtime::{GuestKind, Prepared};

use super::error::{Result, ShimError};

/// The CRI annotation naming a container within its pod.
const CRI_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

/// An endpoint: the metrics it serves and where it is bound.
type Served = (Arc<Metrics>, SocketAddr);

/// The endpoints this shim serves, by the address asked for.
static ENDPOINTS: Mutex<Option<HashMap<SocketAddr, Served>>> = Mutex::new(None);

/// Where the metrics of a container's server are served.
pub enum Endpoint {
    /// The group's network namespace (the pod's): shared by every container asking for it.
    Shared,
    /// A listener already bound in the container's own network namespace.
    Own(TcpListener),
}

/// Counts `prepared`'s metrics (an HTTP component whose policy names a metrics address) in its
/// endpoint, labelled with the container's name (its CRI name, else its id).
pub fn count(prepared: &mut Prepared, id: &str, spec: &Spec, endpoint: Endpoint) -> Result<()> {
    let Some(addr) = prepared.policy().serve.metrics_addr else {
        return Ok(());
    };
    if prepared.kind() != GuestKind::HttpComponent {
        return Ok(());
    }
    let failed =
        |e: std::io::Error| ShimError::InvalidArgument(format!("serving metrics on {addr}: {e}"));
    let (metrics, bound) = match endpoint {
        Endpoint::Own(listener) => serve(listener).map_err(failed)?,
        Endpoint::Shared => {
            let mut endpoints = ENDPOINTS.lock().unwrap_or_else(|e| e.into_inner());
            let endpoints = endpoints.get_or_insert_with(HashMap::new);
            match endpoints.get(&addr) {
                Some(known) => known.clone(),
                None => {
                    let made = serve(TcpListener::bind(addr).map_err(failed)?).map_err(failed)?;
                    endpoints.insert(addr, made.clone());
                    made
                }
            }
        }
    };
    let name = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(CRI_CONTAINER_NAME))
        .cloned()
        .unwrap_or_else(|| id.to_string());
    prepared.count_in(metrics, vec![("container".into(), name)], bound);
    Ok(())
}

fn serve(listener: TcpListener) -> std::io::Result<(Arc<Metrics>, SocketAddr)> {
    let bound = listener.local_addr()?;
    let metrics = Metrics::new();
    metrics.serve(listener)?;
    Ok((metrics, bound))
}
