//! The CLI's side of the admin API: finds the daemon through `admin.json` and turns every
//! failure into one line that says what to do.

use crate::cli::CliError;
use reqwest::StatusCode;
use serde::{de::DeserializeOwned, Serialize};
use site_server::api::{AdminInfo, ErrorBody};
use site_server::config::DataDir;

pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
    dir: DataDir,
}

impl AdminClient {
    /// Reads `admin.json` of a running daemon.
    pub fn from_dir(dir: &DataDir) -> Result<Self, CliError> {
        site_server::config::SiteConfig::load(dir).map_err(|e| CliError::usage(e.to_string()))?;
        let path = dir.admin();
        let text = std::fs::read_to_string(&path).map_err(|_| {
            CliError::failed(format!(
                "site-server is not running for {} (no {}): start it with `site-server run --data {}`",
                dir.root.display(),
                path.display(),
                dir.root.display()
            ))
        })?;
        let info: AdminInfo = serde_json::from_str(&text).map_err(|e| {
            CliError::failed(format!(
                "{} is malformed ({e}): restart the daemon to rewrite it",
                path.display()
            ))
        })?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| CliError::failed(format!("cannot make an HTTP client: {e}")))?;
        Ok(AdminClient {
            base: format!("http://{}", info.addr),
            token: info.token,
            http,
            dir: dir.clone(),
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> CliError {
        CliError::failed(format!(
            "site-server is not running for {} (admin API at {} did not answer: {}): start it with `site-server run --data {}`",
            self.dir.root.display(),
            self.base,
            e.without_url(),
            self.dir.root.display()
        ))
    }

    async fn finish<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, CliError> {
        let status = resp.status();
        if status.is_success() {
            return resp
                .json::<T>()
                .await
                .map_err(|e| CliError::failed(format!("unexpected answer from the daemon: {e}")));
        }
        let body = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| format!("HTTP {status}: {body}"));
        Err(match status {
            StatusCode::UNAUTHORIZED => CliError::failed(format!(
                "the daemon refused the token in {}: {msg}",
                self.dir.admin().display()
            )),
            s if s.is_client_error() => CliError::usage(msg),
            _ => CliError::failed(msg),
        })
    }

    /// Sends `req` with the token and reads the answer.
    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, CliError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        self.finish(resp).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn get_query<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        q: &Q,
    ) -> Result<T, CliError> {
        self.send(self.http.get(self.url(path)).query(q)).await
    }

    pub async fn post_json<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CliError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, CliError> {
        let req = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(body);
        self.send(req).await
    }
}
