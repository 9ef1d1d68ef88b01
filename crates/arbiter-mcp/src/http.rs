//! The streamable-HTTP transport (in progress).

use std::future::Future;
use std::sync::Arc;

use crate::session::Gateway;

/// Settings of `arbiter mcp http`.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub listen: String,
    pub upstream: String,
    pub upstream_headers: Vec<String>,
    pub allow_origins: Vec<String>,
}

/// Serves the gateway until `shutdown` resolves.
pub async fn serve(
    gateway: Arc<Gateway>,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let _ = (gateway, settings, shutdown);
    Err("the streamable-HTTP transport is not available in this build".to_owned())
}
