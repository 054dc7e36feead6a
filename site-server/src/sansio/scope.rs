//! What a peer may tell this site (sans-IO): a report is believed only as far as its
//! origin's place in the tree allows, and an event from above only if it came from above.
//!
//! A child speaks for itself and the sites below it, nothing else: a report whose origin is
//! this site, one of its ancestors or a site outside the child's subtree is refused (it would
//! reserve another site's dedupe keys, or rewrite what this site believes about the tree).
//! A list of children may name only sites that are not this site, an ancestor, the sender
//! itself or a site known below another child. A status message names its origin as its site.
//! The parent speaks for the sites above: an event whose origin is this site or a site below
//! it cannot have come from above and is refused.

use schema::report::{Report, ReportEnvelope, SiteData};
use schema::SiteCode;
use std::collections::BTreeSet;

/// Who may be the origin of the reports that come from one child (see the module doc).
#[derive(Clone, Debug)]
pub struct ChildScope {
    /// This site.
    pub own: SiteCode,
    /// This site's ancestors: its parent and every other origin of its config log.
    pub ancestors: BTreeSet<SiteCode>,
    /// The child the reports came from.
    pub child: SiteCode,
    /// The child and every site reported below it so far.
    pub below_child: BTreeSet<SiteCode>,
    /// This site's other children and every site reported below them.
    pub elsewhere: BTreeSet<SiteCode>,
}

impl ChildScope {
    /// A scope for `child` (which is always in its own subtree).
    pub fn new(
        own: SiteCode,
        ancestors: BTreeSet<SiteCode>,
        child: SiteCode,
        mut below_child: BTreeSet<SiteCode>,
        mut elsewhere: BTreeSet<SiteCode>,
    ) -> Self {
        below_child.insert(child);
        elsewhere.remove(&child);
        for s in &below_child {
            elsewhere.remove(s);
        }
        ChildScope {
            own,
            ancestors,
            child,
            below_child,
            elsewhere,
        }
    }

    /// Whether `env` may be stored; `Err` says why not, naming the origin.
    pub fn admit(&self, env: &ReportEnvelope) -> Result<(), String> {
        let o = env.origin;
        if o == self.own {
            return Err(format!("origin {o} is this site"));
        }
        if self.ancestors.contains(&o) {
            return Err(format!("origin {o} is an ancestor of this site"));
        }
        if !self.below_child.contains(&o) {
            return Err(format!(
                "origin {o} is not {} or a site below it",
                self.child
            ));
        }
        match &env.body {
            Report::Status(m) if m.site != o => Err(format!(
                "status message {} names site {} but its origin is {o}",
                m.id, m.site
            )),
            Report::SiteData(SiteData::Children(kids)) => {
                for k in kids {
                    let why = if *k == self.own {
                        Some("this site")
                    } else if self.ancestors.contains(k) {
                        Some("an ancestor of this site")
                    } else if *k == o || *k == self.child {
                        Some("the site that reports it, or the child it came through")
                    } else if self.elsewhere.contains(k) {
                        Some("a site below another child")
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        return Err(format!("{o} names {k} as its child, but {k} is {why}"));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// After `env` was admitted: the sites it names as children are below the child now.
    pub fn learn(&mut self, env: &ReportEnvelope) {
        if let Report::SiteData(SiteData::Children(kids)) = &env.body {
            self.below_child.extend(kids.iter().copied());
        }
    }
}

/// Whether an event from the parent with origin `origin` may be applied: never one that
/// claims to come from this site or from a site below it (`below`).
pub fn admit_from_parent(
    own: SiteCode,
    below: &BTreeSet<SiteCode>,
    origin: SiteCode,
) -> Result<(), String> {
    if origin == own {
        Err(format!(
            "an event from the parent has origin {origin}, this site: only this site originates its own events"
        ))
    } else if below.contains(&origin) {
        Err(format!(
            "an event from the parent has origin {origin}, a site below this one: events only flow down"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sansio::test_support::{code, t0};
    use schema::report::StatusMessage;

    fn scope() -> ChildScope {
        // P01 under CEN, with children S01 (below it T01) and S02.
        ChildScope::new(
            code("P01"),
            [code("CEN")].into(),
            code("S01"),
            [code("T01")].into(),
            [code("S02")].into(),
        )
    }

    fn status(origin: &str, site: &str) -> ReportEnvelope {
        ReportEnvelope {
            origin: code(origin),
            origin_seq: 1,
            time: t0(),
            body: Report::Status(StatusMessage::new(
                schema::status::SITE_SERVER_STARTED,
                code(site),
                "m",
                t0(),
                vec![],
                vec![],
            )),
            sig: schema::trust::Signature::MISSING,
        }
    }

    fn children(origin: &str, kids: &[&str]) -> ReportEnvelope {
        ReportEnvelope {
            origin: code(origin),
            origin_seq: 1,
            time: t0(),
            body: Report::SiteData(SiteData::Children(kids.iter().map(|k| code(k)).collect())),
            sig: schema::trust::Signature::MISSING,
        }
    }

    #[test]
    fn a_child_speaks_for_itself_and_its_subtree_only() {
        let s = scope();
        assert!(s.admit(&status("S01", "S01")).is_ok());
        assert!(s.admit(&status("T01", "T01")).is_ok());
        for (origin, why) in [
            ("P01", "this site"),
            ("CEN", "ancestor"),
            ("S02", "not S01 or a site below it"),
            ("X99", "not S01 or a site below it"),
        ] {
            let e = s.admit(&status(origin, origin)).unwrap_err();
            assert!(e.contains(why) && e.contains(origin), "{e}");
        }
        // A message whose site is not its origin.
        let e = s.admit(&status("S01", "CEN")).unwrap_err();
        assert!(e.contains("names site CEN"), "{e}");
    }

    #[test]
    fn a_list_of_children_cannot_claim_this_site_an_ancestor_or_a_sibling() {
        let mut s = scope();
        for (kid, why) in [
            ("P01", "this site"),
            ("CEN", "ancestor"),
            ("S02", "below another child"),
            ("S01", "the child it came through"),
        ] {
            let e = s.admit(&children("T01", &[kid])).unwrap_err();
            assert!(e.contains(why), "{kid}: {e}");
        }
        let new = children("T01", &["U01"]);
        assert!(s.admit(&new).is_ok());
        assert!(s.admit(&status("U01", "U01")).is_err(), "not learned yet");
        s.learn(&new);
        assert!(s.admit(&status("U01", "U01")).is_ok());
    }

    #[test]
    fn events_from_the_parent_come_from_above() {
        let below: BTreeSet<SiteCode> = [code("S01")].into();
        assert!(admit_from_parent(code("P01"), &below, code("CEN")).is_ok());
        assert!(admit_from_parent(code("P01"), &below, code("P01")).is_err());
        assert!(admit_from_parent(code("P01"), &below, code("S01")).is_err());
    }
}
