//! This site's place in the chain of keys: the origin key it signs with, the delegations it
//! owes its children, rotations and revocations, the top's checkpoints and the freeze alarm.
//!
//! Files: `signing.key` is the site's first origin key (and its courier key, which peers pin);
//! a rotation writes `origin-next.key` (the new seed and the first event number it signs),
//! which becomes `origin.key` once the parent's delegation of it is in this site's log.

use super::{OpError, Site, Wake};
use crate::db::{view_stale, DbError};
use crate::sansio::decide::{Decided, Refusal};
use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use schema::event::ConfigEvent;
use schema::report::{Attribute, KeyReport, Report};
use schema::status;
use schema::trust::{Delegation, PublicKey, SiteKeyView};
use schema::SiteCode;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What `identity --json` and `status sites` show of the keys.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeysView {
    /// The trust root (the top's first key), if set.
    pub root_key: Option<String>,
    /// The key this site signs its events and reports with now.
    pub origin_key: String,
    /// A rotation's new key waiting for the parent's delegation, and its first number.
    pub pending_key: Option<(String, u64)>,
    /// Every site's keys in this site's log (who delegated, from which number, revoked).
    pub sites: Vec<SiteKeyView>,
    /// The newest checkpoint of the top this site holds, and what it says.
    pub view_from_top: Option<ViewFromTop>,
}

/// How fresh this site's view from the top is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ViewFromTop {
    pub top: SiteCode,
    /// The top's numbers issued when it signed its newest checkpoint here.
    pub issued: u64,
    /// Of the top's numbers, the newest applied here.
    pub applied: u64,
    pub signed: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    /// Whether it has expired.
    pub stale: bool,
    /// Hours since it was signed (whole).
    pub age_hours: i64,
}

impl ViewFromTop {
    /// One line for `status sites` and `status sync`.
    pub fn line(&self) -> String {
        if self.stale {
            format!(
                "the view from the top is {} hours old: {}'s newest checkpoint here expired at {} (it had issued up to {}, {} applied here)",
                self.age_hours,
                self.top,
                self.expires.format("%Y-%m-%d %H:%M UTC"),
                self.issued,
                self.applied
            )
        } else {
            format!(
                "the view from the top is current: {}'s checkpoint of {} (issued up to {}, {} applied here) expires {}",
                self.top,
                self.signed.format("%Y-%m-%d %H:%M UTC"),
                self.issued,
                self.applied,
                self.expires.format("%Y-%m-%d %H:%M UTC")
            )
        }
    }
}

/// The origin key and a pending rotation's key of the site in `dir` (see the module doc).
pub fn load_origin_keys(
    dir: &crate::config::DataDir,
) -> Result<(SigningKey, Option<(SigningKey, u64)>), OpError> {
    let current = if dir.origin_key().exists() {
        read_seed(&dir.origin_key())?.0
    } else {
        sender::identity::load_signing_key(&dir.root)?
    };
    let pending = if dir.origin_next_key().exists() {
        let (k, from) = read_seed(&dir.origin_next_key())?;
        Some((k, from.unwrap_or(1)))
    } else {
        None
    };
    Ok((current, pending))
}

fn key_file_error(path: &Path, why: String) -> OpError {
    OpError::Identity(sender::identity::IdentityError::Invalid {
        path: path.to_path_buf(),
        reason: why,
    })
}

/// A seed file: 64 hex digits, then optionally a space and the first number it signs.
fn read_seed(path: &Path) -> Result<(SigningKey, Option<u64>), OpError> {
    let text = std::fs::read_to_string(path).map_err(|e| key_file_error(path, e.to_string()))?;
    let mut parts = text.split_whitespace();
    let mut seed = [0u8; 32];
    hex::decode_to_slice(parts.next().unwrap_or(""), &mut seed)
        .map_err(|_| key_file_error(path, "expected 64 hex digits".into()))?;
    let from = match parts.next() {
        Some(n) => Some(
            n.parse()
                .map_err(|_| key_file_error(path, "the number after the key is not one".into()))?,
        ),
        None => None,
    };
    Ok((SigningKey::from_bytes(&seed), from))
}

/// Writes a seed file owner-only, durably (temporary file, sync, rename).
fn write_seed(path: &Path, key: &SigningKey, from: Option<u64>) -> Result<(), OpError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let text = match from {
        Some(n) => format!("{} {n}\n", hex::encode(key.to_bytes())),
        None => format!("{}\n", hex::encode(key.to_bytes())),
    };
    let io = |e: std::io::Error| key_file_error(path, e.to_string());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

fn new_key() -> Result<SigningKey, OpError> {
    use ring::rand::SecureRandom;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| Refusal::Invalid("no system randomness for a new key".into()))?;
    Ok(SigningKey::from_bytes(&seed))
}

impl Site {
    /// At start: the report ring trusts the configured children's keys, a rotation whose
    /// delegation arrived takes over, the delegations this site owes are appended, and the
    /// freeze alarm is looked at.
    pub fn start_trust(&self) -> Result<(), OpError> {
        let children: Vec<(SiteCode, PublicKey)> = self
            .cfg
            .children
            .iter()
            .filter_map(|c| c.public_key.parse().ok().map(|k| (c.code, k)))
            .collect();
        self.db.seed_report_ring(&children)?;
        self.promote_rotation()?;
        self.owe_delegations()?;
        self.checkpoint_if_due(Utc::now())?;
        self.check_view(Utc::now())?;
        Ok(())
    }

    /// Appends the delegations this site owes: at the top its genesis (the trust root
    /// delegated to itself, the first event of the tree), then one per configured child that
    /// the log has no key for. Nothing while this site's own key is not delegated yet.
    pub fn owe_delegations(&self) -> Result<(), OpError> {
        let own = self.code();
        let Some(ring) = self.db.keyring()? else {
            return Ok(());
        };
        let mut owed = Vec::new();
        if ring.root().is_none() {
            if self.cfg.parent.is_some() {
                return Ok(());
            }
            owed.push(Delegation {
                site: own,
                key: ring.root_key(),
                valid_from: 1,
            });
        } else if !ring.knows(own) || ring.key_for(own, u64::MAX).is_err() {
            return Ok(());
        }
        for c in &self.cfg.children {
            if ring.knows(c.code) {
                continue;
            }
            if let Ok(key) = c.public_key.parse() {
                owed.push(Delegation {
                    site: c.code,
                    key,
                    valid_from: 1,
                });
            }
        }
        for d in owed {
            self.append_key_event(ConfigEvent::SiteKeyDelegated(d.clone()), |ctx| {
                ctx.status(
                    status::SITE_KEY_CHANGED,
                    vec![Attribute::DestinationSite(d.site)],
                    vec![
                        d.site.to_string(),
                        format!(
                            "{} delegated by {own} from its number {}",
                            d.key, d.valid_from
                        ),
                    ],
                )
            })?;
        }
        Ok(())
    }

    fn append_key_event(
        &self,
        body: ConfigEvent,
        report: impl Fn(&crate::sansio::decide::Ctx) -> Report,
    ) -> Result<(), OpError> {
        let ctx = self.ctx();
        self.db.append_own(ctx.now, |_| {
            Ok(Decided {
                event: Some(body.clone()),
                reports: vec![report(&ctx)],
                out: (),
            })
        })?;
        self.wake(Wake::LogGrew);
        self.wake(Wake::ReportsGrew);
        Ok(())
    }

    /// `key rotate`: a new origin key. At the top it is delegated at once (signed by the old
    /// key); below, the parent is asked (a report signed with the current key) and the new
    /// key signs once the parent's delegation is in this site's log. Until then this site
    /// originates no events (its reports go on under the current key).
    pub fn rotate_key(&self) -> Result<KeysView, OpError> {
        if self.db.pending_rotation().is_some() {
            return Err(Refusal::Invalid(format!(
                "a key rotation already waits for {}'s delegation: see `site-server identity`",
                self.parent_name()
            ))
            .into());
        }
        let key = new_key()?;
        let public = PublicKey::of(&key);
        let own = self.code();
        let from = self.db.last_applied_of(own)? + 1;
        if self.cfg.parent.is_none() {
            write_seed(&self.dir.origin_next_key(), &key, Some(from + 1))?;
            let d = Delegation {
                site: own,
                key: public,
                valid_from: from + 1,
            };
            self.append_key_event(ConfigEvent::SiteKeyDelegated(d), |ctx| {
                ctx.status(
                    status::SITE_KEY_CHANGED,
                    vec![Attribute::DestinationSite(own)],
                    vec![
                        own.to_string(),
                        format!("rotated to {public} from its number {}", from + 1),
                    ],
                )
            })?;
            self.db.set_pending_rotation(Some((key, from + 1)));
            self.promote_rotation()?;
        } else {
            write_seed(&self.dir.origin_next_key(), &key, Some(from))?;
            self.db.set_pending_rotation(Some((key, from)));
            let ctx = self.ctx();
            self.db.append_own_reports(
                ctx.now,
                vec![
                    Report::Key(KeyReport::RotationRequested {
                        key: public,
                        valid_from: from,
                    }),
                    ctx.status(
                        status::SITE_KEY_CHANGED,
                        vec![Attribute::DestinationSite(own)],
                        vec![
                            own.to_string(),
                            format!(
                                "new key {public} from its number {from} asked of {}",
                                self.parent_name()
                            ),
                        ],
                    ),
                ],
            )?;
            self.wake(Wake::ReportsGrew);
        }
        self.keys_view()
    }

    fn parent_name(&self) -> String {
        self.cfg
            .parent
            .as_ref()
            .map_or_else(|| "the parent".into(), |p| p.code.to_string())
    }

    /// A pending rotation whose delegation is in the log takes over: its key file becomes
    /// `origin.key` and the database signs with it.
    pub fn promote_rotation(&self) -> Result<(), OpError> {
        let Some((key, from)) = self.db.pending_rotation() else {
            return Ok(());
        };
        let Some(ring) = self.db.keyring()? else {
            return Ok(());
        };
        if ring.key_for(self.code(), from).ok() != Some(PublicKey::of(&key)) {
            return Ok(());
        }
        std::fs::rename(self.dir.origin_next_key(), self.dir.origin_key())
            .map_err(|e| key_file_error(&self.dir.origin_key(), e.to_string()))?;
        self.db.set_signer(key);
        self.db.set_pending_rotation(None);
        tracing::info!(from, "the rotated key is delegated: signing with it");
        Ok(())
    }

    /// Key rotations that a child asked for in its reports: delegated by this site.
    pub(super) fn delegate_rotations(&self, rotations: &[Delegation]) {
        for d in rotations {
            let r = self.append_key_event(ConfigEvent::SiteKeyDelegated(d.clone()), |ctx| {
                ctx.status(
                    status::SITE_KEY_CHANGED,
                    vec![Attribute::DestinationSite(d.site)],
                    vec![
                        d.site.to_string(),
                        format!(
                            "rotated to {} from its number {} (delegated by {})",
                            d.key,
                            d.valid_from,
                            self.code()
                        ),
                    ],
                )
            });
            if let Err(e) = r {
                tracing::warn!(site = %d.site, error = %e, "cannot delegate a child's rotated key yet");
            }
        }
    }

    /// `key revoke --site S`: revokes the delegation of `site`, a site below this one, from
    /// this point of the log on.
    pub fn revoke_key(&self, site: SiteCode) -> Result<KeysView, OpError> {
        let own = self.code();
        let known = self.known_sites()?;
        if site == own || !known.contains(&site) {
            return Err(Refusal::Invalid(format!(
                "{site} is not a site below {own}: a site revokes only the keys of its own subtree (`site-server status sites` lists it)"
            ))
            .into());
        }
        self.append_key_event(ConfigEvent::SiteKeyRevoked { site }, |ctx| {
            ctx.status(
                status::SITE_KEY_CHANGED,
                vec![Attribute::DestinationSite(site)],
                vec![site.to_string(), format!("revoked by {own}")],
            )
        })?;
        self.keys_view()
    }

    /// Signs a checkpoint now (the top only), expiring `expiry` from now.
    pub fn issue_checkpoint(&self, expiry: std::time::Duration) -> Result<u64, OpError> {
        if let Some(p) = &self.cfg.parent {
            return Err(Refusal::Invalid(format!(
                "only the top site signs checkpoints; this site's parent is {}",
                p.code
            ))
            .into());
        }
        let expiry = chrono::Duration::from_std(expiry)
            .map_err(|_| Refusal::Invalid("the expiry is too long".into()))?;
        let ctx = self.ctx();
        let issued = self.db.last_applied_of(self.code())? + 1;
        self.db.append_own(ctx.now, |_| {
            Ok(Decided {
                event: Some(ConfigEvent::Checkpoint {
                    issued,
                    expires: ctx.now + expiry,
                }),
                reports: vec![],
                out: (),
            })
        })?;
        self.wake(Wake::LogGrew);
        Ok(issued)
    }

    /// At the top: signs a checkpoint if the last one is `[trust] checkpoint_every` old (or
    /// there is none). Returns when the next one is due.
    pub fn checkpoint_if_due(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, OpError> {
        if self.cfg.parent.is_some() {
            return Ok(None);
        }
        let (every, expiry) = self.cfg.trust.durations().map_err(Refusal::Invalid)?;
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::hours(1));
        let due = match self.db.checkpoint()? {
            Some(cp) if cp.origin == self.code() => cp.time + every,
            _ => now,
        };
        if now < due {
            return Ok(Some(due));
        }
        self.issue_checkpoint(expiry)?;
        Ok(Some(now + every))
    }

    /// The view from the top as of `now`.
    pub fn view_from_top(&self, now: DateTime<Utc>) -> Result<Option<ViewFromTop>, OpError> {
        let Some(cp) = self.db.checkpoint()? else {
            return Ok(None);
        };
        Ok(Some(ViewFromTop {
            top: cp.origin,
            issued: cp.issued,
            applied: self.db.last_applied_of(cp.origin)?,
            signed: cp.time,
            expires: cp.expires,
            stale: now >= cp.expires,
            age_hours: (now - cp.time).num_hours(),
        }))
    }

    /// Raises the freeze alarm when the newest checkpoint has expired, and its all-clear when
    /// a current one arrives: once per change (the last word is kept in the database).
    pub fn check_view(&self, now: DateTime<Utc>) -> Result<Option<ViewFromTop>, OpError> {
        let v = self.view_from_top(now)?;
        let Some(view) = &v else {
            return Ok(None);
        };
        let said: bool = self.db.record(&view_stale())?.unwrap_or(false);
        if said != view.stale {
            self.db.set_record(&view_stale(), &view.stale)?;
            let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
            if view.stale {
                tracing::warn!(top = %view.top, expired = %view.expires, "the view from the top is stale");
                self.raise(
                    status::VIEW_FROM_TOP_STALE,
                    vec![Attribute::DestinationSite(view.top)],
                    vec![
                        view.age_hours.to_string(),
                        view.top.to_string(),
                        view.issued.to_string(),
                        fmt(view.expires),
                    ],
                )?;
            } else {
                self.raise(
                    status::VIEW_FROM_TOP_FRESH,
                    vec![Attribute::DestinationSite(view.top)],
                    vec![
                        view.top.to_string(),
                        view.issued.to_string(),
                        fmt(view.expires),
                    ],
                )?;
            }
        }
        Ok(v)
    }

    /// The keys as this site holds them.
    pub fn keys_view(&self) -> Result<KeysView, OpError> {
        let ring = self.db.keyring()?;
        Ok(KeysView {
            root_key: ring.as_ref().map(|r| r.root_key().to_string()),
            origin_key: PublicKey::of(&self.db.signer()).to_string(),
            pending_key: self
                .db
                .pending_rotation()
                .map(|(k, from)| (PublicKey::of(&k).to_string(), from)),
            sites: ring.map(|r| r.view()).unwrap_or_default(),
            view_from_top: self.view_from_top(Utc::now())?,
        })
    }

    /// An event from the parent (or a bundle) refused by the trust check: one 40220 per
    /// event and reason while this process runs, and the error that ends the batch.
    pub(super) fn refused_from_parent(&self, id: &str, why: &str) -> DbError {
        let text = format!("{id}: {why}");
        let first = {
            let mut last = self.last_refusal.lock().unwrap_or_else(|e| e.into_inner());
            let first = last.as_deref() != Some(text.as_str());
            *last = Some(text);
            first
        };
        if first {
            tracing::error!(event = id, why, "refused an event from above");
            let origin = id.split(':').next().unwrap_or(id).to_string();
            let attrs = SiteCode::new(&origin)
                .map(|c| vec![Attribute::DestinationSite(c)])
                .unwrap_or_default();
            self.note(
                status::EVENT_REFUSED_UNTRUSTED,
                attrs,
                vec![id.to_string(), origin, why.to_string()],
            );
        }
        DbError::FromParent(format!("event {id} refused: {why}"))
    }
}
