//! Machines: the policy their distribution points serve, their approvals, their signed
//! reports stored once each as this site's reports, and the roll-ups of `status adverts` and
//! `status machine`, updated in the transaction that appends each report (at every site the
//! report passes on its way up, so each site answers for its subtree without scanning the
//! report log).

use super::keys::{self, AGENTS, PROJ};
use super::{append_own_report_tx, lift, unwrap_tx, Db, DbError, TxResult, TxView};
use crate::sansio::agents::{self as core, AdvertMachine, MachineRecord};
use crate::sansio::projection::{self, Approval, Damaged, Table};
use chrono::{DateTime, Utc};
use schema::encoding;
use schema::machine::{Collection, SignedMachineReport};
use schema::report::{Report, ReportEnvelope, SiteData};
use schema::trust::PublicKey;
use schema::{AdvertisementId, SiteCode};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

fn abort(e: impl std::fmt::Display) -> ConflictableTransactionError<DbError> {
    ConflictableTransactionError::Abort(DbError::Sled(sled::Error::Unsupported(e.to_string())))
}

fn get<T: serde::de::DeserializeOwned>(t: &TransactionalTree, key: &[u8]) -> TxResult<Option<T>> {
    match t.get(key)? {
        None => Ok(None),
        Some(v) => encoding::decode(&v).map(Some).map_err(|source| {
            ConflictableTransactionError::Abort(DbError::Log {
                what: "machine record",
                position: 0,
                source,
            })
        }),
    }
}

fn put<T: serde::Serialize>(t: &TransactionalTree, key: &[u8], v: &T) -> TxResult<()> {
    t.insert(key, encoding::encode(v).map_err(abort)?)?;
    Ok(())
}

/// Updates the roll-ups for a report being appended: a program step moves its machine's
/// state for the advertisement and its history; an inventory replaces the machine's.
pub(super) fn project_report(tx: &[TransactionalTree], env: &ReportEnvelope) -> TxResult<()> {
    match &env.body {
        Report::Status(m) => {
            let Some(state) = core::advance(m) else {
                return Ok(());
            };
            put(
                &tx[AGENTS],
                &keys::agent_advert(&state.advert, m.site, &m.machine),
                &state,
            )?;
            let key = keys::agent_machine(m.site, &m.machine);
            let rec = core::touch_machine(
                get(&tx[AGENTS], &key)?,
                m.site,
                &m.machine,
                m.time,
                None,
                Some(m),
            );
            put(&tx[AGENTS], &key, &rec)
        }
        Report::SiteData(SiteData::Machine(inv)) => {
            put(
                &tx[AGENTS],
                &keys::agent_inventory(env.origin, &inv.name),
                &(env.origin, inv),
            )?;
            let key = keys::agent_machine(env.origin, &inv.name);
            let rec = core::touch_machine(
                get(&tx[AGENTS], &key)?,
                env.origin,
                &inv.name,
                env.time,
                Some(inv),
                None,
            );
            put(&tx[AGENTS], &key, &rec)
        }
        _ => Ok(()),
    }
}

/// What [`Db::apply_machine_reports`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineReportsOutcome {
    /// The last of the machine's report numbers stored (the agent forgets those).
    pub upto: u64,
    /// Reports newly stored.
    pub stored: u64,
    /// Why the rest of the batch was refused, if it was.
    pub refused: Option<String>,
}

impl Db {
    /// Every collection, by name.
    pub fn collections(&self) -> Result<Vec<Collection>, DbError> {
        self.all(Table::Collections)
    }

    /// Machines approved at `site`.
    pub fn approvals(&self, site: SiteCode) -> Result<Vec<Approval>, DbError> {
        let prefix = format!("m:{site}/");
        let mut out = Vec::new();
        for kv in self.trees[PROJ + Table::Machines as usize].scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            out.push(encoding::decode(&v).map_err(|source| Damaged {
                table: Table::Machines,
                key: String::from_utf8_lossy(&k).into_owned(),
                source,
            })?);
        }
        Ok(out)
    }

    /// Whether `site` approves new machines by itself.
    pub fn auto_approval(&self, site: SiteCode) -> Result<bool, DbError> {
        projection::auto_approval(&self.view(), site).map_err(Self::read_err)
    }

    /// Records that machine `name` of this site asked with `key` and is not approved; true
    /// the first time for that key (so 40510 is raised once).
    pub fn note_pending(&self, name: &str, key: &PublicKey) -> Result<bool, DbError> {
        let k = keys::agent_pending(name);
        let v = key.0.to_vec();
        let was = self.trees[AGENTS].insert(k, v.clone())?;
        self.db.flush()?;
        Ok(was.as_deref() != Some(&v[..]))
    }

    /// Machines of this site that asked and are not approved with the key they asked with.
    pub fn pending_machines(&self) -> Result<Vec<(String, PublicKey)>, DbError> {
        let mut out = Vec::new();
        for kv in self.trees[AGENTS].scan_prefix(keys::AGENT_PENDING_PREFIX) {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&k[keys::AGENT_PENDING_PREFIX.len()..]).into_owned();
            let Ok(key) = <[u8; 32]>::try_from(&v[..]) else {
                continue;
            };
            let key = PublicKey(key);
            let approved = projection::approval(&self.view(), self.own, &name)
                .map_err(Self::read_err)?
                .is_some_and(|a| a.key == key);
            if !approved {
                out.push((name, key));
            }
        }
        Ok(out)
    }

    /// Stores the reports of machine `machine` of this site, each as this site's report(s),
    /// once each: numbers at or below the last stored are skipped, a gap stops the batch. A
    /// report must verify under the key the machine is approved with (checked here against
    /// the projection, in the transaction, whatever the distribution point said).
    pub fn apply_machine_reports(
        &self,
        machine: &str,
        reports: &[SignedMachineReport],
        now: DateTime<Utc>,
    ) -> Result<MachineReportsOutcome, DbError> {
        let own = self.own;
        let signer = self.signer();
        let out = unwrap_tx(self.trees[..].transaction(|tx| -> TxResult<_> {
            let Some(approval) = projection::approval(&TxView(tx), own, machine).map_err(lift)?
            else {
                return Ok(MachineReportsOutcome {
                    upto: 0,
                    stored: 0,
                    refused: Some(format!("machine {machine} is not approved at {own}")),
                });
            };
            let seq_key = keys::agent_seq(machine);
            let mut last = match tx[AGENTS].get(&seq_key)? {
                Some(v) if v.len() == 40 && v[8..] == approval.key.0 => {
                    u64::from_be_bytes(v[..8].try_into().expect("8 bytes"))
                }
                // Another key (a machine approved anew) numbers from 1 again.
                _ => 0,
            };
            let mut o = MachineReportsOutcome {
                upto: last,
                stored: 0,
                refused: None,
            };
            for r in reports {
                let n = r.report.seq;
                if n <= last {
                    continue;
                }
                if n != last + 1 {
                    o.refused = Some(format!(
                        "report {n} of {machine} arrived but {} is next: the agent resends from it",
                        last + 1
                    ));
                    break;
                }
                if !r.verifies(machine, &approval.key) {
                    o.refused = Some(format!(
                        "report {n} of {machine} is not signed by its approved key {}..",
                        &approval.key.to_string()[..16]
                    ));
                    break;
                }
                for body in core::machine_reports(own, machine, &r.report) {
                    append_own_report_tx(tx, own, &signer, now, body)?;
                }
                last = n;
                o.stored += 1;
            }
            o.upto = last;
            let mut v = last.to_be_bytes().to_vec();
            v.extend_from_slice(&approval.key.0);
            tx[AGENTS].insert(seq_key, v)?;
            Ok(o)
        }))?;
        self.db.flush()?;
        Ok(out)
    }

    /// Where each machine stands with `advert` (or with every advertisement).
    pub fn advert_machines(
        &self,
        advert: Option<&AdvertisementId>,
    ) -> Result<Vec<AdvertMachine>, DbError> {
        self.agents_scan(&keys::agent_adverts(advert))
    }

    /// The machine records (of `site`, or of the whole subtree).
    pub fn machine_records(&self, site: Option<SiteCode>) -> Result<Vec<MachineRecord>, DbError> {
        self.agents_scan(&keys::agent_machines(site))
    }

    /// Removes the roll-ups derived from reports (machine records, advertisement states), for
    /// a rebuild; approvals asked for and report numbers stay.
    pub(super) fn clear_machine_rollups(&self) -> Result<(), DbError> {
        let mut b = sled::Batch::default();
        let mut n = 0usize;
        for prefix in [
            keys::agent_machines(None),
            keys::agent_adverts(None),
            keys::AGENT_INVENTORY_PREFIX.to_vec(),
        ] {
            for kv in self.trees[AGENTS].scan_prefix(prefix) {
                b.remove(kv?.0);
                n += 1;
                if n >= 20_000 {
                    self.trees[AGENTS].apply_batch(std::mem::take(&mut b))?;
                    n = 0;
                }
            }
        }
        self.trees[AGENTS].apply_batch(b)?;
        Ok(())
    }

    /// Every machine's site and last inventory (of the whole subtree).
    pub fn machine_inventories(
        &self,
    ) -> Result<Vec<(SiteCode, schema::machine::Inventory)>, DbError> {
        self.agents_scan(keys::AGENT_INVENTORY_PREFIX)
    }

    fn agents_scan<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &[u8],
    ) -> Result<Vec<T>, DbError> {
        let mut out = Vec::new();
        for kv in self.trees[AGENTS].scan_prefix(prefix) {
            let (_, v) = kv?;
            out.push(encoding::decode(&v).map_err(|source| DbError::Log {
                what: "machine record",
                position: 0,
                source,
            })?);
        }
        Ok(out)
    }
}
