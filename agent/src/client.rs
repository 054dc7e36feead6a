//! Signed requests to the distribution point.

use crate::AgentError;
use ed25519_dalek::SigningKey;
use reqwest::StatusCode;
use schema::event::Policy;
use schema::machine::{self, Registration, ReportsStored, SignedMachineReport};
use schema::trust::PublicKey;
use std::time::Duration;

/// The most bytes the agent reads of one answer (a policy, a registration, an ack): a
/// distribution point gone bad cannot make it buffer more.
pub const MAX_ANSWER: usize = 64 << 20;

/// An answer's body, read up to [`MAX_ANSWER`].
async fn read_answer(mut r: reqwest::Response, base: &str) -> Result<Vec<u8>, AgentError> {
    let mut out = Vec::new();
    while let Some(c) = r
        .chunk()
        .await
        .map_err(|e| AgentError::Unreachable(format!("{base}: {e}")))?
    {
        if out.len() + c.len() > MAX_ANSWER {
            return Err(AgentError::Failed(format!(
                "the distribution point at {base} sent an answer over {MAX_ANSWER} bytes: refused"
            )));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

/// The agent's side of its distribution point.
pub struct DpClient {
    base: String,
    name: String,
    key: SigningKey,
    pub http: reqwest::Client,
}

/// What a policy poll answered.
pub enum PolicyAnswer {
    /// The agent's copy is current.
    Unchanged,
    /// A new policy and its tag.
    New(Box<Policy>, Option<String>),
}

impl DpClient {
    pub fn new(base: &str, name: &str, key: SigningKey) -> Result<DpClient, AgentError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| AgentError::Failed(format!("cannot make an HTTP client: {e}")))?;
        Ok(DpClient {
            base: base.trim_end_matches('/').to_string(),
            name: name.to_string(),
            key,
            http,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn signed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let t = chrono::Utc::now().timestamp();
        let auth = machine::authorization(method.as_str(), path, &self.name, t, &body, &self.key);
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::AUTHORIZATION, auth)
            .body(body)
    }

    fn unreachable(&self, e: reqwest::Error) -> AgentError {
        AgentError::Unreachable(format!(
            "the distribution point at {} does not answer: {e}",
            self.base
        ))
    }

    async fn refusal(r: reqwest::Response) -> AgentError {
        let code = r.status();
        let text = r.text().await.unwrap_or_default();
        let text = text.trim();
        if code == StatusCode::FORBIDDEN {
            AgentError::Refused(text.to_string())
        } else if code == StatusCode::SERVICE_UNAVAILABLE {
            AgentError::Unreachable(text.to_string())
        } else {
            AgentError::Failed(format!("the distribution point answered {code}: {text}"))
        }
    }

    /// Registers (or checks the registration of) this machine with its inventory.
    pub async fn register(&self, inv: &machine::Inventory) -> Result<Registration, AgentError> {
        let body = schema::encoding::encode(&machine::RegisterRequest {
            key: PublicKey::of(&self.key),
            inventory: inv.clone(),
        })
        .map_err(|e| AgentError::Failed(e.to_string()))?;
        let r = self
            .signed(reqwest::Method::POST, "/agent/register", body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let code = r.status();
        if code == StatusCode::OK || code == StatusCode::FORBIDDEN {
            let b = read_answer(r, &self.base).await?;
            if let Ok(reg) = schema::encoding::decode::<Registration>(&b) {
                return Ok(reg);
            }
            return Err(AgentError::Refused(
                String::from_utf8_lossy(&b).trim().to_string(),
            ));
        }
        Err(Self::refusal(r).await)
    }

    /// Asks for the policy (`etag`: the copy the agent has).
    pub async fn policy(&self, etag: Option<&str>) -> Result<PolicyAnswer, AgentError> {
        let mut req = self.signed(reqwest::Method::GET, "/agent/policy", vec![]);
        if let Some(t) = etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, t);
        }
        let r = req.send().await.map_err(|e| self.unreachable(e))?;
        match r.status() {
            StatusCode::NOT_MODIFIED => Ok(PolicyAnswer::Unchanged),
            StatusCode::OK => {
                let tag = r
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let b = read_answer(r, &self.base).await?;
                let p: Policy = schema::encoding::decode(&b).map_err(|e| {
                    AgentError::Failed(format!(
                        "the policy from {} does not decode: {e}",
                        self.base
                    ))
                })?;
                Ok(PolicyAnswer::New(Box::new(p), tag))
            }
            _ => Err(Self::refusal(r).await),
        }
    }

    /// Sends reports; answers the last number the site stored.
    pub async fn reports(
        &self,
        batch: &[SignedMachineReport],
    ) -> Result<ReportsStored, AgentError> {
        let body = schema::encoding::encode(&batch.to_vec())
            .map_err(|e| AgentError::Failed(e.to_string()))?;
        let r = self
            .signed(reqwest::Method::POST, "/agent/reports", body)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if r.status() != StatusCode::OK {
            return Err(Self::refusal(r).await);
        }
        let b = read_answer(r, &self.base).await?;
        schema::encoding::decode(&b)
            .map_err(|e| AgentError::Failed(format!("the DP's answer does not decode: {e}")))
    }
}
