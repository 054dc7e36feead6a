//! The admin HTTP API (axum), on loopback, behind a bearer token.
//!
//! At start the daemon writes `admin.json` (address, token, pid; mode 0600) into the data
//! directory; the CLI reads it. Every route needs `Authorization: Bearer TOKEN`; a request
//! without it, or with another token, gets 401 and does nothing.

use crate::sansio::decide::{AdvertRequest, PublishRequest, Refusal};
use crate::site::{MessageQuery, OpError, Site};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use schema::encoding;
use schema::{PackageId, SiteCode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The body of every error answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// What `admin.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminInfo {
    pub addr: String,
    pub token: String,
    pub pid: u32,
    /// The address the site's QUIC listener is bound to (children dial it).
    #[serde(default)]
    pub listen: String,
    /// The console's URL (`[ui] listen`).
    #[serde(default)]
    pub ui: String,
}

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Refused(r @ Refusal::UnknownPackage(_)) => {
                ApiError(StatusCode::NOT_FOUND, r.to_string())
            }
            OpError::Refused(r) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, r.to_string()),
            other => {
                tracing::error!(error = %other, "request failed");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Runs a blocking site operation off the async runtime.
async fn blocking<T: Send + 'static>(
    site: &Arc<Site>,
    f: impl FnOnce(&Site) -> Result<T, OpError> + Send + 'static,
) -> ApiResult<T> {
    let site = site.clone();
    match tokio::task::spawn_blocking(move || f(&site)).await {
        Ok(r) => r.map(Json).map_err(ApiError::from),
        Err(e) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("operation panicked: {e}"),
        )),
    }
}

struct AppState {
    site: Arc<Site>,
    token: String,
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if crate::ui::constant_time_eq(t.as_bytes(), st.token.as_bytes()) => {
            next.run(req).await
        }
        _ => {
            tracing::warn!("admin API call refused: missing or wrong token");
            ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token: use the token in the data directory's admin.json"
                    .into(),
            )
            .into_response()
        }
    }
}

pub fn router(site: Arc<Site>, token: String) -> Router {
    let st = Arc::new(AppState {
        site: site.clone(),
        token,
    });
    let r = Router::new()
        .route("/v1/identity", get(identity))
        .route("/v1/packages", get(packages))
        .route("/v1/packages/publish", post(publish))
        .route("/v1/packages/{id}", get(package))
        .route("/v1/packages/{id}/distribute", post(distribute))
        .route("/v1/packages/{id}/undistribute", post(undistribute))
        .route("/v1/packages/{id}/retire", post(retire))
        .route("/v1/courier/plan", post(courier_plan))
        .route("/v1/courier/exported", post(courier_exported))
        .route("/v1/courier/cursor", get(courier_cursor))
        .route("/v1/courier/apply", post(courier_apply))
        .route("/v1/courier/refused", post(courier_refused))
        .route("/v1/courier/receipt-plan", get(receipt_plan))
        .route("/v1/courier/receipt", post(receipt_apply))
        .route("/v1/status/packages", get(content))
        .route("/v1/adverts", get(adverts).post(create_advert))
        .route("/v1/adverts/lifecycle", post(advert_lifecycle))
        .route("/v1/collections", get(collections).post(set_collection))
        .route("/v1/machines", get(machines))
        .route("/v1/machines/approve", post(approve))
        .route("/v1/status/adverts", get(adverts_status))
        .route("/v1/status/machine", get(machine_status))
        .route("/v1/log", get(log))
        .route("/v1/status/messages", get(messages))
        .route("/v1/status/sites", get(sites))
        .route("/v1/status/sync", get(sync_status))
        .route("/v1/sync/now", post(sync_now))
        .route("/v1/catalog", get(catalog_list))
        .route("/v1/catalog/entry", get(catalog_show))
        .route("/v1/status/senders", get(senders))
        .route("/v1/dps", get(dps))
        .route("/v1/dp-groups", get(dp_groups).post(dp_group_create))
        .route("/v1/dp-groups/members", post(dp_group_change))
        .route("/v1/children/{code}", post(child_set))
        .route("/v1/sender/retry", post(sender_retry))
        .route("/v1/sender/boost", post(sender_boost))
        .route("/v1/packages/{id}/priority", post(set_priority))
        .route("/v1/keys", get(keys))
        .route("/v1/keys/rotate", post(key_rotate))
        .route("/v1/keys/revoke", post(key_revoke))
        .route("/v1/keys/checkpoint", post(key_checkpoint));
    #[cfg(feature = "forge")]
    let r = r.route("/v1/test/forge", post(forge));
    r.layer(DefaultBodyLimit::max(encoding::MAX_DECODED))
        .layer(middleware::from_fn_with_state(st.clone(), auth))
        .with_state(st)
}

async fn identity(State(st): State<Arc<AppState>>) -> ApiResult<crate::site::IdentityView> {
    blocking(&st.site, |s| s.identity()).await
}

async fn keys(State(st): State<Arc<AppState>>) -> ApiResult<crate::site::KeysView> {
    blocking(&st.site, |s| s.keys_view()).await
}

async fn key_rotate(State(st): State<Arc<AppState>>) -> ApiResult<crate::site::KeysView> {
    blocking(&st.site, |s| s.rotate_key()).await
}

/// `key revoke`'s request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RevokeRequest {
    pub site: SiteCode,
}

async fn key_revoke(
    State(st): State<Arc<AppState>>,
    Json(req): Json<RevokeRequest>,
) -> ApiResult<crate::site::KeysView> {
    blocking(&st.site, move |s| s.revoke_key(req.site)).await
}

/// `key checkpoint`'s request: the expiry (`[trust] checkpoint_expiry` when none).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointRequest {
    pub expiry: Option<String>,
}

/// What `key checkpoint` did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointOutcome {
    pub issued: u64,
}

async fn key_checkpoint(
    State(st): State<Arc<AppState>>,
    Json(req): Json<CheckpointRequest>,
) -> ApiResult<CheckpointOutcome> {
    blocking(&st.site, move |s| {
        let expiry = match &req.expiry {
            Some(e) => sender::schedule::parse_duration(e)
                .map_err(|e| crate::sansio::decide::Refusal::Invalid(format!("--expiry: {e}")))?,
            None => {
                s.cfg()
                    .trust
                    .durations()
                    .map_err(crate::sansio::decide::Refusal::Invalid)?
                    .1
            }
        };
        Ok(CheckpointOutcome {
            issued: s.issue_checkpoint(expiry)?,
        })
    })
    .await
}

#[cfg(feature = "forge")]
async fn forge(
    State(st): State<Arc<AppState>>,
    Json(req): Json<crate::forge::ForgeRequest>,
) -> ApiResult<crate::forge::Forged> {
    blocking(&st.site, move |s| s.forge(&req)).await
}

async fn packages(State(st): State<Arc<AppState>>) -> ApiResult<Vec<crate::site::PackageSummary>> {
    blocking(&st.site, |s| s.packages()).await
}

fn parse_package(id: &str) -> Result<PackageId, ApiError> {
    id.parse()
        .map_err(|e: schema::IdError| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn package(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<crate::site::PackageDetail> {
    let id = parse_package(&id)?;
    blocking(&st.site, move |s| s.package(&id)).await
}

async fn publish(
    State(st): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> ApiResult<crate::sansio::decide::PublishOutcome> {
    let req: PublishRequest = encoding::decode(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("publish request does not decode: {e}"),
        )
    })?;
    blocking(&st.site, move |s| s.publish(&req)).await
}

#[derive(Deserialize)]
struct DistributeBody {
    targets: Vec<schema::event::DistributionTarget>,
}

async fn distribute(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(body): Json<DistributeBody>,
) -> ApiResult<crate::sansio::decide::DistributeOutcome> {
    let package = parse_package(&id)?;
    let req = crate::sansio::decide::DistributeRequest {
        package,
        targets: body.targets,
    };
    blocking(&st.site, move |s| s.distribute(&req)).await
}

async fn undistribute(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(body): Json<DistributeBody>,
) -> ApiResult<Vec<schema::event::DistributionTarget>> {
    let package = parse_package(&id)?;
    let req = crate::sansio::decide::DistributeRequest {
        package,
        targets: body.targets,
    };
    blocking(&st.site, move |s| s.undistribute(&req)).await
}

#[derive(Deserialize)]
struct RetireBody {
    version: u32,
}

async fn retire(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(body): Json<RetireBody>,
) -> ApiResult<()> {
    let package = parse_package(&id)?;
    blocking(&st.site, move |s| s.retire(package, body.version)).await
}

#[derive(Deserialize)]
struct PlanBody {
    to: SiteCode,
    since_receipt: bool,
}

async fn courier_plan(
    State(st): State<Arc<AppState>>,
    Json(b): Json<PlanBody>,
) -> ApiResult<crate::site::ExportPlan> {
    blocking(&st.site, move |s| s.courier_plan(b.to, b.since_receipt)).await
}

#[derive(Deserialize)]
struct ExportedBody {
    plan: crate::site::ExportPlan,
    outcome: crate::site::ExportOutcome,
}

async fn courier_exported(
    State(st): State<Arc<AppState>>,
    Json(b): Json<ExportedBody>,
) -> ApiResult<()> {
    blocking(&st.site, move |s| s.courier_exported(&b.plan, &b.outcome)).await
}

async fn courier_cursor(State(st): State<Arc<AppState>>) -> ApiResult<u64> {
    blocking(&st.site, |s| s.parent_applied()).await
}

#[derive(Deserialize)]
struct ApplyBody {
    header: ::courier::BundleHeader,
    events: crate::site::BundleEvents,
}

async fn courier_apply(
    State(st): State<Arc<AppState>>,
    Json(b): Json<ApplyBody>,
) -> ApiResult<crate::site::ImportOutcome> {
    blocking(&st.site, move |s| s.courier_apply(&b.header, &b.events)).await
}

#[derive(Deserialize)]
struct RefusedBody {
    what: String,
    reason: String,
}

async fn courier_refused(
    State(st): State<Arc<AppState>>,
    Json(b): Json<RefusedBody>,
) -> ApiResult<()> {
    blocking(&st.site, move |s| s.courier_refused(&b.what, &b.reason)).await
}

type ReceiptPlan = (
    ::courier::BundleHeader,
    Vec<schema::report::ReportEnvelope>,
    crate::site::ReceiptState,
);

async fn receipt_plan(State(st): State<Arc<AppState>>) -> ApiResult<ReceiptPlan> {
    blocking(&st.site, |s| s.receipt_plan()).await
}

async fn receipt_apply(
    State(st): State<Arc<AppState>>,
    Json(r): Json<crate::site::ReadReceipt>,
) -> ApiResult<crate::site::ImportOutcome> {
    blocking(&st.site, move |s| s.receipt_apply(&r)).await
}

async fn content(State(st): State<Arc<AppState>>) -> ApiResult<Vec<crate::site::ContentRow>> {
    blocking(&st.site, |s| s.content()).await
}

async fn adverts(State(st): State<Arc<AppState>>) -> ApiResult<Vec<schema::advert::Advertisement>> {
    blocking(&st.site, |s| s.adverts()).await
}

async fn advert_lifecycle(
    State(st): State<Arc<AppState>>,
    Json(req): Json<crate::site::LifecycleRequest>,
) -> ApiResult<schema::advert::Advertisement> {
    blocking(&st.site, move |s| s.advert_lifecycle(&req)).await
}

/// `collection create|change`'s request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectionRequest {
    pub collection: schema::machine::Collection,
    pub replace: bool,
}

async fn collections(
    State(st): State<Arc<AppState>>,
) -> ApiResult<Vec<schema::machine::Collection>> {
    blocking(&st.site, |s| s.collections()).await
}

async fn set_collection(
    State(st): State<Arc<AppState>>,
    Json(req): Json<CollectionRequest>,
) -> ApiResult<schema::machine::Collection> {
    blocking(&st.site, move |s| {
        s.set_collection(&req.collection, req.replace)
    })
    .await
}

async fn machines(State(st): State<Arc<AppState>>) -> ApiResult<crate::site::MachinesView> {
    blocking(&st.site, |s| s.machines()).await
}

async fn approve(
    State(st): State<Arc<AppState>>,
    Json(req): Json<crate::site::ApproveRequest>,
) -> ApiResult<crate::site::MachinesView> {
    blocking(&st.site, move |s| s.approve(&req)).await
}

/// `status adverts`' query.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AdvertsQuery {
    pub id: Option<schema::AdvertisementId>,
    #[serde(default)]
    pub failed: bool,
}

async fn adverts_status(
    State(st): State<Arc<AppState>>,
    Query(q): Query<AdvertsQuery>,
) -> ApiResult<crate::site::AdvertsView> {
    blocking(&st.site, move |s| s.adverts_view(q.id, q.failed)).await
}

/// `status machine`'s query.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineQuery {
    pub name: String,
}

/// `status machine`'s answer: the machine's record at each site that has one, and where it
/// stands with each advertisement.
pub type MachineStatus = (
    Vec<crate::sansio::agents::MachineRecord>,
    Vec<crate::sansio::agents::AdvertMachine>,
);

async fn machine_status(
    State(st): State<Arc<AppState>>,
    Query(q): Query<MachineQuery>,
) -> ApiResult<MachineStatus> {
    blocking(&st.site, move |s| s.machine_view(&q.name)).await
}

async fn create_advert(
    State(st): State<Arc<AppState>>,
    Json(req): Json<AdvertRequest>,
) -> ApiResult<schema::advert::Advertisement> {
    blocking(&st.site, move |s| s.create_advert(&req)).await
}

#[derive(Deserialize)]
struct LogQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn log(
    State(st): State<Arc<AppState>>,
    Query(q): Query<LogQuery>,
) -> ApiResult<Vec<crate::site::LogEntry>> {
    blocking(&st.site, move |s| {
        s.log(q.from.unwrap_or(1), q.limit.unwrap_or(10_000))
    })
    .await
}

async fn messages(
    State(st): State<Arc<AppState>>,
    Query(q): Query<MessageQuery>,
) -> ApiResult<Vec<crate::site::MessageRow>> {
    blocking(&st.site, move |s| s.messages(&q)).await
}

async fn sites(State(st): State<Arc<AppState>>) -> ApiResult<crate::site::SitesView> {
    blocking(&st.site, |s| s.sites_view()).await
}

async fn sync_status(State(st): State<Arc<AppState>>) -> ApiResult<Vec<crate::site::SyncRow>> {
    blocking(&st.site, |s| s.sync_rows()).await
}

async fn sync_now(State(st): State<Arc<AppState>>) -> ApiResult<crate::catalog::sync::SyncOutcome> {
    Ok(Json(crate::catalog::sync::sync_now(st.site.clone()).await?))
}

async fn catalog_list(
    State(st): State<Arc<AppState>>,
    Query(q): Query<crate::site::CatalogQuery>,
) -> ApiResult<Vec<schema::catalog::Update>> {
    blocking(&st.site, move |s| s.catalog_list(&q)).await
}

#[derive(Deserialize)]
struct IdQuery {
    id: String,
}

async fn catalog_show(
    State(st): State<Arc<AppState>>,
    Query(q): Query<IdQuery>,
) -> ApiResult<crate::site::CatalogEntry> {
    blocking(&st.site, move |s| s.catalog_show(&q.id)).await
}

async fn senders(State(st): State<Arc<AppState>>) -> ApiResult<crate::site::SendersView> {
    blocking(&st.site, |s| Ok(s.senders())).await
}

async fn child_set(
    State(st): State<Arc<AppState>>,
    Path(code): Path<String>,
    Json(req): Json<crate::site::LinkPolicyRequest>,
) -> ApiResult<crate::config::ChildLink> {
    let code = schema::SiteCode::new(&code)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    blocking(&st.site, move |s| s.set_child_policy(code, &req)).await
}

#[derive(serde::Serialize, Deserialize)]
pub struct Retried {
    pub retried: usize,
}

async fn sender_retry(
    State(st): State<Arc<AppState>>,
    Json(req): Json<crate::site::RetryRequest>,
) -> ApiResult<Retried> {
    blocking(&st.site, move |s| {
        s.sender_retry(&req).map(|retried| Retried { retried })
    })
    .await
}

#[derive(serde::Serialize, Deserialize)]
pub struct BoostBody {
    pub package: PackageId,
    /// Until when (none: until lifted).
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

async fn sender_boost(
    State(st): State<Arc<AppState>>,
    Json(b): Json<BoostBody>,
) -> ApiResult<BoostBody> {
    blocking(&st.site, move |s| s.boost(b.package, b.until).map(|()| b)).await
}

#[derive(serde::Serialize, Deserialize)]
pub struct PriorityBody {
    pub priority: schema::event::Priority,
}

async fn set_priority(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(b): Json<PriorityBody>,
) -> ApiResult<PriorityBody> {
    let package = parse_package(&id)?;
    blocking(&st.site, move |s| {
        s.set_priority(package, b.priority).map(|()| b)
    })
    .await
}

async fn dps(State(st): State<Arc<AppState>>) -> ApiResult<Vec<crate::site::DpRow>> {
    blocking(&st.site, |s| s.dps()).await
}

async fn dp_groups(
    State(st): State<Arc<AppState>>,
) -> ApiResult<crate::sansio::projection::DpGroups> {
    blocking(&st.site, |s| s.dp_groups()).await
}

#[derive(serde::Serialize, Deserialize)]
pub struct GroupBody {
    pub group: String,
}

async fn dp_group_create(
    State(st): State<Arc<AppState>>,
    Json(b): Json<GroupBody>,
) -> ApiResult<GroupBody> {
    blocking(&st.site, move |s| s.dp_group_create(&b.group).map(|()| b)).await
}

async fn dp_group_change(
    State(st): State<Arc<AppState>>,
    Json(b): Json<crate::site::DpGroupChange>,
) -> ApiResult<crate::site::DpGroupChange> {
    blocking(&st.site, move |s| s.dp_group_change(&b).map(|()| b)).await
}
