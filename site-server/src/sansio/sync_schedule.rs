//! When a top site syncs its catalog by itself: `daily HH:MM` or `weekly DAY HH:MM`, in the
//! site's zone (`site.toml`'s `zone`, UTC unless set), as ConfigMgr's "synchronize on a
//! schedule". Pure: the time and zone come in as arguments.
//!
//! A wall time that a daylight-saving change skips runs at the first minute that exists after
//! it; one that happens twice runs the first time. A sync missed while the site was down is
//! not run late: the next one comes at its time (`sync now` runs one by hand).

use chrono::{DateTime, Datelike, Duration, NaiveTime, TimeZone, Utc, Weekday};

/// A parsed sync schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncSchedule {
    Daily(NaiveTime),
    Weekly(Weekday, NaiveTime),
}

impl SyncSchedule {
    /// Parses `daily 02:00` or `weekly sun 02:00` (day names in English, 3 letters or
    /// whole).
    pub fn parse(s: &str) -> Result<SyncSchedule, String> {
        let bad = |why: &str| {
            format!("sync schedule {s:?}: {why}; write \"daily 02:00\" or \"weekly sun 02:00\"")
        };
        let words: Vec<&str> = s.split_whitespace().collect();
        let time = |t: &str| {
            NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| bad(&format!("{t:?} is not HH:MM")))
        };
        match words.as_slice() {
            [d, t] if d.eq_ignore_ascii_case("daily") => Ok(SyncSchedule::Daily(time(t)?)),
            [w, d, t] if w.eq_ignore_ascii_case("weekly") => {
                let day: Weekday = d
                    .parse()
                    .map_err(|_| bad(&format!("{d:?} is not a day of the week")))?;
                Ok(SyncSchedule::Weekly(day, time(t)?))
            }
            _ => Err(bad("unknown form")),
        }
    }

    /// The first scheduled time strictly after `after`, in `zone`.
    pub fn next_after<Z: TimeZone>(&self, after: DateTime<Utc>, zone: &Z) -> DateTime<Utc> {
        let (at, day) = match *self {
            SyncSchedule::Daily(t) => (t, None),
            SyncSchedule::Weekly(d, t) => (t, Some(d)),
        };
        let local = after.with_timezone(zone).date_naive();
        // Look at this day and the next fortnight (a week, and days a zone change skips).
        for n in 0..15 {
            let date = local + Duration::days(n);
            if day.is_some_and(|d| date.weekday() != d) {
                continue;
            }
            let wall = date.and_time(at);
            // A skipped wall time runs at the first minute after the gap.
            let mut when = None;
            for skip in 0..=180 {
                let w = wall + Duration::minutes(skip);
                if let Some(t) = zone.from_local_datetime(&w).earliest() {
                    when = Some(t.with_timezone(&Utc));
                    break;
                }
            }
            if let Some(t) = when.filter(|t| *t > after) {
                return t;
            }
        }
        // Only a zone that skips whole weeks gets here: try again a day later.
        after + Duration::days(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn schedules_parse_or_say_how_to_write_them() {
        assert_eq!(
            SyncSchedule::parse("daily 02:00").unwrap(),
            SyncSchedule::Daily(NaiveTime::from_hms_opt(2, 0, 0).unwrap())
        );
        assert_eq!(
            SyncSchedule::parse("Weekly Sunday 23:30").unwrap(),
            SyncSchedule::Weekly(Weekday::Sun, NaiveTime::from_hms_opt(23, 30, 0).unwrap())
        );
        for bad in [
            "daily",
            "daily 25:00",
            "weekly 02:00",
            "weekly funday 02:00",
            "hourly",
        ] {
            let e = SyncSchedule::parse(bad).unwrap_err();
            assert!(e.contains("daily 02:00"), "{e}");
        }
    }

    #[test]
    fn the_next_sync_is_at_the_wall_time_of_the_site_zone() {
        let daily = SyncSchedule::parse("daily 02:00").unwrap();
        assert_eq!(
            daily.next_after(utc("2026-11-22T01:00:00Z"), &Utc),
            utc("2026-11-22T02:00:00Z")
        );
        // Exactly at the time: the next day (strictly after).
        assert_eq!(
            daily.next_after(utc("2026-11-22T02:00:00Z"), &Utc),
            utc("2026-11-23T02:00:00Z")
        );
        let seoul = chrono_tz::Asia::Seoul;
        assert_eq!(
            daily.next_after(utc("2026-11-22T10:00:00Z"), &seoul),
            utc("2026-11-22T17:00:00Z")
        );
        let weekly = SyncSchedule::parse("weekly sun 02:00").unwrap();
        // 2026-11-22 is a Sunday.
        assert_eq!(
            weekly.next_after(utc("2026-11-22T03:00:00Z"), &Utc),
            utc("2026-11-29T02:00:00Z")
        );
        // 02:30 does not exist in Berlin on 2026-03-29: it runs at 03:00 local (01:00 UTC).
        let berlin = chrono_tz::Europe::Berlin;
        let d = SyncSchedule::parse("daily 02:30").unwrap();
        assert_eq!(
            d.next_after(utc("2026-03-28T12:00:00Z"), &berlin),
            utc("2026-03-29T01:00:00Z")
        );
    }
}
