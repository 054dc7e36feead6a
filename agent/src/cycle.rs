//! One policy cycle, the thin shell around [`crate::plan`]: register, report the inventory
//! when it changed, fetch and verify the policy, report "received" for new advertisements,
//! run what is due (download, verify, run, classify, report), and send the reports.

use crate::client::{DpClient, PolicyAnswer};
use crate::config::AgentConfig;
use crate::exec::{self, Ended};
use crate::plan::{self, AdvertRecord, Decision, LastRun, RunEnd, Verified};
use crate::state::{Running, State};
use crate::AgentError;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use ed25519_dalek::SigningKey;
use schema::advert::{Advertisement, ExitOutcome};
use schema::event::Policy;
use schema::machine::{MachineEvent, Step};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The agent: its directory, configuration, key and state.
pub struct Agent {
    pub dir: PathBuf,
    pub cfg: AgentConfig,
    key: SigningKey,
    pub state: State,
    client: DpClient,
}

/// What one cycle did, for `run-once` and the log.
#[derive(Clone, Debug, Default)]
pub struct CycleReport {
    pub approved: bool,
    pub adverts: usize,
    pub ran: Vec<(schema::AdvertisementId, String)>,
    pub unsent: usize,
    /// When something is next due (to sleep until, at most the poll interval).
    pub next_due: Option<DateTime<Utc>>,
}

/// This machine's wall-clock time to UTC (`None` in a DST gap).
pub fn local(n: NaiveDateTime) -> Option<DateTime<Utc>> {
    chrono::Local
        .from_local_datetime(&n)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

impl Agent {
    pub fn open(dir: &Path) -> Result<Agent, AgentError> {
        let cfg = AgentConfig::load(dir)?;
        let key = crate::config::load_key(dir)?;
        let state = State::load(dir)?;
        let client = DpClient::new(&cfg.dp, &cfg.name, key.clone())?;
        Ok(Agent {
            dir: dir.to_path_buf(),
            cfg,
            key,
            state,
            client,
        })
    }

    fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.bin")
    }

    fn cache(&self) -> PathBuf {
        self.dir.join("cache")
    }

    fn save(&self) -> Result<(), AgentError> {
        self.state.save(&self.dir)
    }

    fn report(&mut self, body: MachineEvent) -> Result<(), AgentError> {
        let name = self.cfg.name.clone();
        self.state.report(&name, &self.key, Utc::now(), body)
    }

    fn step(&mut self, a: &Advertisement, rerun: u32, step: Step) -> Result<(), AgentError> {
        tracing::info!(advert = %a.id, rerun, step = ?step, "step");
        self.report(MachineEvent::Program {
            advert: a.id,
            rerun,
            step,
        })
    }

    /// A run the agent was in when it stopped: its outcome is unknown, so it is reported as
    /// an error and counts as failed (a later assignment or a re-run of the failed runs it
    /// again); nothing is reported as installed.
    fn finish_interrupted(&mut self) -> Result<(), AgentError> {
        let Some(r) = self.state.running.take() else {
            return Ok(());
        };
        // Stop what it left running, if that process is still the program's (pids are reused).
        if r.pid.is_some_and(|p| exec::is_running(p, &r.program)) {
            exec::kill_group(r.pid);
        }
        tracing::warn!(advert = %r.advert, "the agent stopped during a run: reported as not completed");
        self.report(MachineEvent::Program {
            advert: r.advert,
            rerun: r.rerun,
            step: Step::Error {
                why: format!(
                    "the agent stopped during the run started {} (its outcome is unknown)",
                    r.started.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                tail: String::new(),
            },
        })?;
        let rec = self.state.adverts.entry(r.advert).or_default();
        rec.last = Some(LastRun {
            due: r.due,
            rerun: r.rerun,
            end: RunEnd::Failed,
        });
        self.save()
    }

    /// Sends what the outbox holds, oldest first, until it is empty or the DP does not take
    /// more.
    pub async fn flush(&mut self) -> Result<(), AgentError> {
        while !self.state.outbox.is_empty() {
            let n = self
                .state
                .outbox
                .len()
                .min(schema::machine::MAX_REPORTS_PER_REQUEST);
            let stored = self.client.reports(&self.state.outbox[..n]).await?;
            let before = self.state.outbox.len();
            self.state.outbox.retain(|r| r.report.seq > stored.upto);
            self.save()?;
            if let Some(why) = stored.refused {
                tracing::warn!(why = %why, "the site refused a report");
            }
            if self.state.outbox.len() == before {
                break;
            }
        }
        Ok(())
    }

    /// The policy: asked for, verified whole against the trust root, kept.
    async fn policy(&mut self) -> Result<Verified, AgentError> {
        let kept = std::fs::read(self.policy_path())
            .ok()
            .and_then(|b| schema::encoding::decode::<Policy>(&b).ok());
        let etag = kept.as_ref().and(self.state.policy_etag.clone());
        let root = self.cfg.root_key;
        match self.client.policy(etag.as_deref()).await? {
            PolicyAnswer::Unchanged => {
                // A DP that says "not modified" to an agent that holds no policy is wrong.
                let p = kept.ok_or_else(|| {
                    AgentError::Failed(
                        "the distribution point answered 'not modified' but this agent holds no policy".into(),
                    )
                })?;
                plan::verify(&p, root).map_err(AgentError::Untrusted)
            }
            PolicyAnswer::New(p, tag) => {
                // Verified before it is kept: a policy that fails is never stored.
                let v = plan::verify(&p, root).map_err(AgentError::Untrusted)?;
                let b =
                    schema::encoding::encode(&*p).map_err(|e| AgentError::Failed(e.to_string()))?;
                crate::state::write_atomic(&self.policy_path(), &b)?;
                self.state.policy_etag = tag;
                Ok(v)
            }
        }
    }

    /// One cycle (see the module doc).
    pub async fn cycle(&mut self) -> Result<CycleReport, AgentError> {
        self.finish_interrupted()?;
        let mut out = CycleReport::default();
        let inv = self.cfg.inventory();
        let reg = self.client.register(&inv).await?;
        self.state.site = reg.site.or(self.state.site);
        self.state.approved = reg.approved;
        if !reg.approved {
            self.save()?;
            return Err(AgentError::Refused(reg.message));
        }
        out.approved = true;
        if self.state.inventory_reported.as_ref() != Some(&inv) {
            self.report(MachineEvent::Inventory(inv.clone()))?;
            self.state.inventory_reported = Some(inv.clone());
            self.save()?;
        }
        let verified = match self.policy().await {
            Ok(v) => v,
            Err(e) => {
                self.state.last_poll = Some((Utc::now(), e.to_string()));
                self.save()?;
                let _ = self.flush().await;
                return Err(e);
            }
        };
        self.state.last_poll = Some((Utc::now(), "ok".into()));
        let site = verified.site.or(self.state.site).ok_or_else(|| {
            AgentError::Failed("the distribution point did not say its site".into())
        })?;
        let mine: Vec<Advertisement> = verified.mine(&inv, site).cloned().collect();
        out.adverts = mine.len();
        for a in &mine {
            if a.enabled
                && self.state.adverts.get(&a.id).and_then(|r| r.received) != Some(a.run.rerun)
            {
                self.step(a, a.run.rerun, Step::Received)?;
                self.state.adverts.entry(a.id).or_default().received = Some(a.run.rerun);
            }
        }
        self.save()?;
        // Reports go before anything runs: the site sees "received" at once.
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "reports wait for the next cycle");
        }
        let now = Utc::now();
        for a in &mine {
            let rec = self.state.adverts.get(&a.id).cloned().unwrap_or_default();
            match plan::decide(a, &rec, now, &local) {
                Decision::Nothing => {}
                Decision::Adopt { rerun } => {
                    if let Some(l) = self.state.adverts.entry(a.id).or_default().last.as_mut() {
                        l.rerun = rerun;
                    }
                    self.save()?;
                }
                Decision::Run { due } => {
                    let what = self.run_one(a, &verified, due, &rec).await?;
                    out.ran.push((a.id, what));
                    if let Err(e) = self.flush().await {
                        tracing::warn!(error = %e, "reports wait for the next cycle");
                    }
                }
            }
            if a.enabled {
                if let Some(n) = plan::next_due(a, Utc::now(), &local) {
                    out.next_due = Some(out.next_due.map_or(n, |m: DateTime<Utc>| m.min(n)));
                }
            }
        }
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "reports wait for the next cycle");
        }
        out.unsent = self.state.outbox.len();
        Ok(out)
    }

    /// Downloads and runs `a` for the assignment due at `due`.
    async fn run_one(
        &mut self,
        a: &Advertisement,
        v: &Verified,
        due: DateTime<Utc>,
        _rec: &AdvertRecord,
    ) -> Result<String, AgentError> {
        let rerun = a.run.rerun;
        let set_last = |s: &mut State, end: RunEnd| {
            s.adverts.entry(a.id).or_default().last = Some(LastRun { due, rerun, end });
        };
        let Some(pv) = v.current(a.package).cloned() else {
            let why = format!(
                "no version of package {} is in the policy (retired, or not published yet)",
                a.package
            );
            self.step(a, rerun, Step::DownloadFailed { why: why.clone() })?;
            set_last(&mut self.state, RunEnd::Failed);
            self.save()?;
            return Ok(why);
        };
        let cache = self.cache();
        if let Err(e) =
            crate::fetch::fetch(&self.client.http, self.client.base(), &cache, &pv).await
        {
            let why = e.to_string();
            self.step(a, rerun, Step::DownloadFailed { why: why.clone() })?;
            set_last(&mut self.state, RunEnd::Failed);
            self.save()?;
            return Ok(why);
        }
        let dir = crate::fetch::dir_of(&cache, &pv);
        let (program, args) = match exec::command(&a.program.command_line, &dir, &pv.manifest) {
            Ok(x) => x,
            Err(why) => {
                self.step(
                    a,
                    rerun,
                    Step::Error {
                        why: why.clone(),
                        tail: String::new(),
                    },
                )?;
                set_last(&mut self.state, RunEnd::Failed);
                self.save()?;
                return Ok(why);
            }
        };
        self.step(a, rerun, Step::Started)?;
        self.state.running = Some(Running {
            advert: a.id,
            rerun,
            due,
            started: Utc::now(),
            pid: None,
            program: program.display().to_string(),
        });
        self.save()?;
        let _ = self.flush().await;
        let limit = Duration::from_secs(a.run.timeout_secs.max(1) as u64);
        let dir_for_pid = self.dir.clone();
        let mut state_for_pid = self.state.clone();
        let o = exec::run(&program, &args, &dir, limit, move |pid| {
            if let Some(r) = state_for_pid.running.as_mut() {
                r.pid = pid;
                let _ = state_for_pid.save(&dir_for_pid);
            }
        })
        .await;
        self.state.running = None;
        let (step, end, what) = match o.ended {
            Ended::Error(why) => (
                Step::Error {
                    why: why.clone(),
                    tail: o.tail,
                },
                RunEnd::Failed,
                why,
            ),
            Ended::Exited(code) => match a.program.exit.classify(code) {
                ExitOutcome::Success => (
                    Step::Succeeded { exit: code },
                    RunEnd::Done,
                    format!("succeeded ({code})"),
                ),
                ExitOutcome::AlreadyInstalled => (
                    Step::AlreadyInstalled { exit: code },
                    RunEnd::Done,
                    format!("already installed ({code})"),
                ),
                ExitOutcome::NotApplicable => (
                    Step::NotApplicable { exit: code },
                    RunEnd::Done,
                    format!("not applicable ({code})"),
                ),
                ExitOutcome::SuccessRebootRequired => (
                    Step::RebootPending {
                        exit: code,
                        succeeded: true,
                    },
                    RunEnd::RebootPending,
                    format!("succeeded, restart required ({code})"),
                ),
                ExitOutcome::FailRebootRequired => (
                    Step::RebootPending {
                        exit: code,
                        succeeded: false,
                    },
                    RunEnd::Failed,
                    format!("failed, restart required ({code})"),
                ),
                ExitOutcome::Failure => (
                    Step::Failed {
                        exit: code,
                        tail: o.tail,
                    },
                    RunEnd::Failed,
                    format!("failed ({code})"),
                ),
            },
        };
        let reboot = matches!(step, Step::RebootPending { .. });
        self.step(a, rerun, step)?;
        set_last(&mut self.state, end);
        self.save()?;
        if reboot {
            self.reboot().await;
        }
        Ok(what)
    }

    /// Restarts the machine if the operator enabled it (`allow_reboot`), else leaves it to
    /// them (11270 says it must restart).
    async fn reboot(&mut self) {
        if !self.cfg.allow_reboot {
            tracing::warn!("the machine must restart; allow_reboot is off, so the agent leaves it to the operator");
            return;
        }
        let _ = self.flush().await;
        let words = shlex::split(&self.cfg.reboot_command).unwrap_or_default();
        if let Some((p, args)) = words.split_first() {
            tracing::warn!(command = %self.cfg.reboot_command, "restarting the machine");
            match tokio::process::Command::new(p).args(args).status().await {
                Ok(s) => tracing::info!(status = %s, "reboot command ran"),
                Err(e) => tracing::error!(error = %e, "the reboot command could not start"),
            }
        }
    }
}
