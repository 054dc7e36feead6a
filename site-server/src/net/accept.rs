//! The listener: accepts every connection on the site's QUIC endpoint and dispatches it by
//! the certificate it pinned: a child site goes to [`super::child_link`], a distribution
//! point to [`super::dp_link`]; anything else is closed.

use crate::sansio::links::Role;
use crate::site::Site;
use chrono::Utc;
use schema::report::Attribute;
use schema::status;
use sender::tls::{self, Pins};
use std::sync::Arc;

/// Accepts children's connections on `endpoint` until it is closed.
pub async fn serve_children(site: Arc<Site>, endpoint: quinn::Endpoint, pins: Arc<Pins>) {
    while let Some(incoming) = endpoint.accept().await {
        let (site, pins) = (site.clone(), pins.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%remote, error = %e, "connection refused");
                    site.note(
                        status::CONNECTION_REFUSED,
                        vec![],
                        vec![remote.to_string(), e.to_string()],
                    );
                    return;
                }
            };
            let Some(child) = tls::peer_fingerprint(&conn).and_then(|fp| pins.peer(&fp)) else {
                conn.close(1u32.into(), b"unknown peer");
                return;
            };
            if let Some(dp) = child.strip_prefix("dp:") {
                let span = tracing::info_span!("dp link", dp = %dp, %remote);
                let _g = span.enter();
                let r = crate::net::dp_link::serve_dp(&site, &conn, dp).await;
                let why = match &r {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::info!(reason = %why, "distribution point link down");
                site.note(
                    status::DP_DETACHED,
                    vec![Attribute::DistributionPoint(dp.to_string())],
                    vec![format!("{}/{dp}", site.cfg().code), why],
                );
                return;
            }
            let span = tracing::info_span!("child link", child = %child, %remote);
            let _g = span.enter();
            let r = super::child_link::serve_child(&site, &conn, &child).await;
            let why = match &r {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            };
            if let Ok(code) = schema::SiteCode::new(&child) {
                site.link_update(code, Role::Child, |l| l.on_failure(Utc::now(), why.clone()));
                site.sender(|s| {
                    s.on_disconnect(
                        &code,
                        &format!("link to {code} lost: {why}"),
                        std::time::Instant::now(),
                    )
                });
                crate::net::sending::raise_notices(&site);
            }
            tracing::info!(reason = %why, "child link down");
            site.note(status::CHILD_LINK_DOWN, vec![], vec![child.clone(), why]);
        });
    }
}
