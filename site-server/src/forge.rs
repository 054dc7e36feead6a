//! Test-only (the `forge` cargo feature, which only the tests crate enables): this site
//! plays a compromised middle site. `POST /v1/test/forge` appends a forged event or report to
//! its logs as they are, with no trust check, for its children or its parent to refuse; and
//! `SITEREP_FORGE_WITHHOLD=ORIGIN:SEQ` leaves that event out of every batch it sends its
//! children (the positions after it shift down by one, as a withholding site's would).

use crate::site::{OpError, Site, Wake};
use schema::event::{ConfigEvent, EventEnvelope};
use schema::report::{Report, ReportEnvelope, StatusMessage};
use schema::SiteCode;
use serde::{Deserialize, Serialize};

/// What to forge.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForgeRequest {
    /// Who the forgery claims as its origin.
    pub origin: SiteCode,
    /// `event` or `report`.
    pub what: String,
    /// Sign with this site's own key (`own`) or with a key nobody delegated (`fresh`).
    pub key: String,
}

/// What was forged: `ORIGIN:SEQ`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forged {
    pub id: String,
}

impl Site {
    /// Appends the forgery (see the module doc).
    pub fn forge(&self, req: &ForgeRequest) -> Result<Forged, OpError> {
        let key = match req.key.as_str() {
            "own" => self.db().signer(),
            _ => ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]),
        };
        let now = chrono::Utc::now();
        let bad = |e: schema::trust::TrustError| {
            OpError::Refused(crate::sansio::decide::Refusal::Invalid(e.to_string()))
        };
        if req.what == "report" {
            let seq = 1_000_000 + self.db().counts()?.reports;
            let body = Report::Status(StatusMessage::new(
                schema::status::SITE_SERVER_STARTED,
                req.origin,
                "forged",
                now,
                vec![],
                vec![req.origin.to_string(), "0".into(), "0".into()],
            ));
            let env = ReportEnvelope::signed(req.origin, seq, now, body, &key).map_err(bad)?;
            self.db().append_report_raw(&env)?;
            self.wake(Wake::ReportsGrew);
            return Ok(Forged {
                id: format!("{}:{seq}", req.origin),
            });
        }
        let seq = self.db().last_applied_of(req.origin)? + 1;
        let adverts = self.db().adverts()?;
        let mut advert = adverts.first().cloned().ok_or_else(|| {
            OpError::Refused(crate::sansio::decide::Refusal::Invalid(
                "forge an advertisement after one exists to copy".into(),
            ))
        })?;
        advert.id = schema::AdvertisementId {
            site: req.origin,
            number: 29_000 + seq as u32 % 1000,
        };
        advert.name = "forged".into();
        advert.program.command_line = "forged.sh --everywhere".into();
        let env = EventEnvelope::signed(
            req.origin,
            seq,
            now,
            ConfigEvent::AdvertisementCreated(advert),
            &key,
        )
        .map_err(bad)?;
        self.db().append_received(&env)?;
        self.wake(Wake::LogGrew);
        Ok(Forged {
            id: format!("{}:{seq}", req.origin),
        })
    }
}

/// Leaves out the event `SITEREP_FORGE_WITHHOLD` names.
pub fn withhold(events: &mut Vec<EventEnvelope>) {
    let Ok(spec) = std::env::var("SITEREP_FORGE_WITHHOLD") else {
        return;
    };
    events.retain(|e| format!("{}:{}", e.origin, e.origin_seq) != spec);
}
