//! Advertisements: which program of which package runs on which collection, and when.

use crate::ids::{AdvertisementId, PackageId};
use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

/// Whether an advertisement's times are UTC or each client's local time (SMS's "UTC" box).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBasis {
    /// Times are UTC: every client acts at the same moment.
    Utc,
    /// Times are each client's local wall-clock time.
    ClientLocal,
}

/// An offer of one program of a package to the members of a collection, from a start time
/// and, if mandatory, by given times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertisement {
    /// Its id, allocated by the site that created it.
    pub id: AdvertisementId,
    /// A name for people (by default `PACKAGE - PROGRAM`).
    pub name: String,
    /// The package whose program runs.
    pub package: PackageId,
    /// The program that runs, with its exit rules.
    pub program: Program,
    /// The target collection's name.
    pub collection: String,
    /// When the program becomes available.
    pub start: NaiveDateTime,
    /// When the program must have run (mandatory assignments); empty: optional only.
    pub mandatory: Vec<NaiveDateTime>,
    /// Whether `start` and `mandatory` are UTC or each client's local time.
    pub time_basis: TimeBasis,
    /// True until the advertisement is disabled; disabling sets it false and keeps the rest.
    pub enabled: bool,
    /// How agents run it: the recurring schedule, the time limit and re-runs.
    pub run: RunOptions,
}

/// How an agent runs an advertised program beyond its start and mandatory times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// A recurring mandatory schedule from `start`, in seconds (`7d`: every 7 days); an agent
    /// whose last run failed runs it again at each recurrence.
    pub recurring_secs: Option<u64>,
    /// How long the program may run before the agent kills it and reports a failure.
    pub timeout_secs: u32,
    /// The re-run generation: every `adv rerun` adds one, and an agent whose last run was of
    /// an older generation runs the program again.
    pub rerun: u32,
    /// Whether the last re-run asked only the machines whose last run failed.
    pub rerun_failed_only: bool,
}

/// The installer timeout of the seed documents: 30 minutes.
pub const DEFAULT_TIMEOUT_SECS: u32 = 30 * 60;

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            recurring_secs: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            rerun: 0,
            rerun_failed_only: false,
        }
    }
}

/// A program of a package: the command a client runs and how to read its exit code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// Its name, as advertisements and status messages show it.
    pub name: String,
    /// The command a client runs.
    pub command_line: String,
    /// How to read the command's exit code.
    pub exit: ExitRules,
}

/// Exit conditions, as Cluster-Aware Updating's hotfix rules: every code listed in one of the
/// sets means that outcome; any other code is a failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRules {
    /// Codes that mean success. At least one.
    pub success: Vec<i32>,
    /// Codes that mean success, finished only by a restart.
    pub success_reboot_required: Vec<i32>,
    /// Codes that mean failure, with a restart needed.
    pub fail_reboot_required: Vec<i32>,
    /// Codes that mean the software was already installed: nothing to do.
    pub already_installed: Vec<i32>,
    /// Codes that mean the software does not apply to this machine: nothing to do.
    pub not_applicable: Vec<i32>,
    /// CAU's `alwaysReboot`: a success code is read as success-reboot-required.
    pub always_reboot: bool,
}

impl Default for ExitRules {
    /// The defaults of CAU's hotfix rules for .msi/.msu installers.
    fn default() -> Self {
        ExitRules {
            success: vec![0],
            success_reboot_required: vec![3010, 1641],
            fail_reboot_required: vec![],
            // WU_S_ALREADY_INSTALLED (0x00240006)
            already_installed: vec![0x0024_0006],
            // WU_E_NOT_APPLICABLE (0x80240017)
            not_applicable: vec![0x8024_0017_u32 as i32],
            always_reboot: false,
        }
    }
}

/// What an exit code means under a program's [`ExitRules`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitOutcome {
    /// The program succeeded.
    Success,
    /// The program succeeded; a restart finishes the job.
    SuccessRebootRequired,
    /// The program failed and the machine needs a restart.
    FailRebootRequired,
    /// Nothing to do: already installed.
    AlreadyInstalled,
    /// Nothing to do: it does not apply to this machine.
    NotApplicable,
    /// Any code that no set lists.
    Failure,
}

impl ExitRules {
    /// What exit code `code` means. A success code reads as success-reboot-required when
    /// `always_reboot` is set; a code that no set lists is a failure.
    pub fn classify(&self, code: i32) -> ExitOutcome {
        if self.success.contains(&code) {
            if self.always_reboot {
                ExitOutcome::SuccessRebootRequired
            } else {
                ExitOutcome::Success
            }
        } else if self.success_reboot_required.contains(&code) {
            ExitOutcome::SuccessRebootRequired
        } else if self.fail_reboot_required.contains(&code) {
            ExitOutcome::FailRebootRequired
        } else if self.already_installed.contains(&code) {
            ExitOutcome::AlreadyInstalled
        } else if self.not_applicable.contains(&code) {
            ExitOutcome::NotApplicable
        } else {
            ExitOutcome::Failure
        }
    }

    /// Refuses rules where one code means two outcomes.
    pub fn validate(&self) -> Result<(), String> {
        let sets: [(&str, &Vec<i32>); 5] = [
            ("success", &self.success),
            ("success-reboot-required", &self.success_reboot_required),
            ("fail-reboot-required", &self.fail_reboot_required),
            ("already-installed", &self.already_installed),
            ("not-applicable", &self.not_applicable),
        ];
        if self.success.is_empty() {
            return Err("exit rules need at least one success code".into());
        }
        for (i, (a, sa)) in sets.iter().enumerate() {
            for (b, sb) in &sets[i + 1..] {
                if let Some(c) = sa.iter().find(|c| sb.contains(c)) {
                    return Err(format!(
                        "exit code {c} is listed as both {a} and {b}: give each code one meaning"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cau_exit_rules() {
        let r = ExitRules::default();
        assert_eq!(r.classify(0), ExitOutcome::Success);
        assert_eq!(r.classify(3010), ExitOutcome::SuccessRebootRequired);
        assert_eq!(r.classify(0x0024_0006), ExitOutcome::AlreadyInstalled);
        assert_eq!(
            r.classify(0x8024_0017_u32 as i32),
            ExitOutcome::NotApplicable
        );
        assert_eq!(r.classify(1), ExitOutcome::Failure);
        assert_eq!(r.classify(-1), ExitOutcome::Failure);
        let always = ExitRules {
            always_reboot: true,
            ..ExitRules::default()
        };
        assert_eq!(always.classify(0), ExitOutcome::SuccessRebootRequired);
        let clash = ExitRules {
            fail_reboot_required: vec![3010],
            ..ExitRules::default()
        };
        assert!(clash.validate().is_err());
        assert!(ExitRules::default().validate().is_ok());
    }
}
