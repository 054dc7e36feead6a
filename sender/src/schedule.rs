//! Address schedules and rate limits per hour of the week, and the meter that enforces a rate
//! (sans-IO: wall time and monotonic time are arguments).
//!
//! Both are written as rules, first match wins, separated by `;`:
//!
//! ```text
//! mon-fri 08-18 high; sat,sun closed; * all          (an address schedule)
//! mon-fri 08-18 2MiB/s; * 20MiB/s                    (a rate limit)
//! * pulse 64KiB 2s                                   (SMS's pulse mode: a block, then a pause)
//! ```
//!
//! A rule is `[DAYS] [HOURS] VALUE`. DAYS is `*`, a day (`mon`), a range (`mon-fri`, `fri-mon`
//! wraps) or a list (`sat,sun`); HOURS is `08-18` (from 08:00 to 17:59; `22-06` wraps over
//! midnight; `00-24` is the whole day). A missing DAYS or HOURS means all of them. Hours no rule
//! covers take the default (open to all priorities; unlimited). Hours are those of the site's
//! zone (`zone` in `site.toml`, an IANA name such as `Asia/Seoul`, UTC by default).

use chrono::{DateTime, Datelike, Timelike, Utc};
use schema::event::Priority;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Hours in a week.
pub const HOURS: usize = 168;

/// A rule text, availability, rate, size, duration or zone that does not parse. The message
/// names what was wrong and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

/// Which priorities an address lets through in an hour (SMS's four choices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Availability {
    /// Open for all priorities.
    All,
    /// Medium and high only.
    MediumPlus,
    /// High only.
    High,
    /// Closed.
    Closed,
}

impl Availability {
    /// Whether a job of priority `p` may send in an hour of this availability.
    pub fn allows(self, p: Priority) -> bool {
        match self {
            Availability::All => true,
            Availability::MediumPlus => p != Priority::Low,
            Availability::High => p == Priority::High,
            Availability::Closed => false,
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Availability::All => "all",
            Availability::MediumPlus => "medium+",
            Availability::High => "high",
            Availability::Closed => "closed",
        })
    }
}

impl FromStr for Availability {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "all" | "open" => Ok(Availability::All),
            "medium+" | "medium" => Ok(Availability::MediumPlus),
            "high" => Ok(Availability::High),
            "closed" => Ok(Availability::Closed),
            other => Err(ScheduleError(format!(
                "`{other}` is not an availability: use all, medium+, high or closed"
            ))),
        }
    }
}

/// How fast a link may send in an hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rate {
    /// No limit.
    Unlimited,
    /// Bytes per second.
    Limit(u64),
    /// SMS's pulse mode: `block` bytes, then `delay_ms` of silence.
    Pulse {
        /// Bytes sent in each pulse.
        block: u64,
        /// Silence after each block, in milliseconds (above zero in a parsed rate).
        delay_ms: u64,
    },
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Unlimited => f.write_str("unlimited"),
            Rate::Limit(b) => write!(f, "{}/s", size_text(*b)),
            Rate::Pulse { block, delay_ms } => {
                write!(
                    f,
                    "pulse {} {}",
                    size_text(*block),
                    duration_text(*delay_ms)
                )
            }
        }
    }
}

fn size_text(b: u64) -> String {
    for (unit, n) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if b >= n && b.is_multiple_of(n) {
            return format!("{}{unit}", b / n);
        }
    }
    if b >= 1 << 20 {
        return format!("{:.1}MiB", b as f64 / (1u64 << 20) as f64);
    }
    format!("{b}B")
}

fn duration_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses `2MiB`, `512KiB`, `10MB`, `1500` (bytes).
pub fn parse_size(s: &str) -> Result<u64, ScheduleError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| ScheduleError(format!("`{s}` is not a size: write e.g. 2MiB or 512KiB")))?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1000.0,
        "m" | "mib" => 1048576.0,
        "mb" => 1e6,
        "g" | "gib" => 1073741824.0,
        "gb" => 1e9,
        _ => {
            return Err(ScheduleError(format!(
                "`{s}`: unknown unit `{unit}`; use B, KiB, MiB, GiB (or KB, MB, GB)"
            )))
        }
    };
    let v = (n * mult).round();
    if v < 1.0 {
        return Err(ScheduleError(format!("`{s}` must be at least one byte")));
    }
    Ok(v as u64)
}

/// Parses `500ms`, `2s`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, ScheduleError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        ScheduleError(format!(
            "`{s}` is not a duration: write e.g. 500ms, 2s, 5m or 1h"
        ))
    })?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n * 1000,
        "m" | "min" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => {
            return Err(ScheduleError(format!(
                "`{s}`: unknown unit `{unit}`; use ms, s, m, h or d"
            )))
        }
    };
    Ok(Duration::from_millis(ms))
}

impl FromStr for Rate {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["unlimited"] => Ok(Rate::Unlimited),
            ["pulse", block, delay] => {
                let block = parse_size(block)?;
                let delay = parse_duration(delay)?;
                if delay.is_zero() {
                    return Err(ScheduleError("a pulse needs a delay above zero".into()));
                }
                Ok(Rate::Pulse {
                    block,
                    delay_ms: delay.as_millis() as u64,
                })
            }
            [one] if one.ends_with("/s") => Ok(Rate::Limit(parse_size(&one[..one.len() - 2])?)),
            _ => Err(ScheduleError(format!(
                "`{s}` is not a rate: write unlimited, e.g. 2MiB/s, or pulse BLOCK DELAY (e.g. pulse 64KiB 2s)"
            ))),
        }
    }
}

/// A value per hour of the week, written as rules (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Week<T> {
    text: String,
    hours: Vec<T>,
}

impl<T: Copy + FromStr<Err = ScheduleError>> Week<T> {
    /// The same value every hour (what an empty rule text means).
    pub fn always(v: T) -> Self {
        Week {
            text: String::new(),
            hours: vec![v; HOURS],
        }
    }

    /// Parses rules; hours no rule covers take `default`.
    pub fn parse(text: &str, default: T) -> Result<Self, ScheduleError> {
        let mut hours: Vec<Option<T>> = vec![None; HOURS];
        for rule in text.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let words: Vec<&str> = rule.split_whitespace().collect();
            let mut i = 0;
            let mut days = [true; 7];
            if let Some(d) = words.get(i).and_then(|w| parse_days(w).transpose()) {
                days = d.map_err(|e| ScheduleError(format!("rule `{rule}`: {e}")))?;
                i += 1;
            }
            let mut span = (0u32, 24u32);
            if let Some(h) = words.get(i).and_then(|w| parse_hours(w).transpose()) {
                span = h.map_err(|e| ScheduleError(format!("rule `{rule}`: {e}")))?;
                i += 1;
            }
            if i >= words.len() {
                return Err(ScheduleError(format!(
                    "rule `{rule}` has no value: end it with what applies, e.g. `{rule} high` or `{rule} 2MiB/s`"
                )));
            }
            let value: T = words[i..]
                .join(" ")
                .parse()
                .map_err(|e: ScheduleError| ScheduleError(format!("rule `{rule}`: {e}")))?;
            for (d, on) in days.iter().enumerate() {
                if !on {
                    continue;
                }
                let (from, to) = span;
                let hs: Vec<u32> = if from < to {
                    (from..to).collect()
                } else {
                    (from..24).chain(0..to).collect()
                };
                for h in hs {
                    let slot = &mut hours[d * 24 + h as usize];
                    if slot.is_none() {
                        *slot = Some(value);
                    }
                }
            }
        }
        Ok(Week {
            text: text.trim().to_string(),
            hours: hours.into_iter().map(|h| h.unwrap_or(default)).collect(),
        })
    }

    /// The value in force at `wall`, in `zone`.
    pub fn at(&self, wall: DateTime<Utc>, zone: chrono_tz::Tz) -> T {
        self.hours[hour_of_week(wall, zone)]
    }

    /// The rules as written (empty: the default all week).
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Monday 00:00-00:59 is 0, Sunday 23:00-23:59 is 167.
pub fn hour_of_week(wall: DateTime<Utc>, zone: chrono_tz::Tz) -> usize {
    let local = wall.with_timezone(&zone);
    local.weekday().num_days_from_monday() as usize * 24 + local.hour() as usize
}

/// Parses a zone name: `UTC` or an IANA name.
pub fn parse_zone(s: &str) -> Result<chrono_tz::Tz, ScheduleError> {
    s.parse().map_err(|_| {
        ScheduleError(format!(
            "zone `{s}` is unknown: use UTC or an IANA name such as Asia/Seoul or Europe/Berlin"
        ))
    })
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(s: &str) -> Option<usize> {
    let s = s.to_ascii_lowercase();
    DAYS.iter().position(|d| s.starts_with(d) && s.len() <= 9)
}

/// `Ok(None)`: the word is not a day spec.
fn parse_days(w: &str) -> Result<Option<[bool; 7]>, String> {
    if w == "*" {
        return Ok(Some([true; 7]));
    }
    let first = w.split([',', '-']).next().unwrap_or("");
    if day(first).is_none() {
        return Ok(None);
    }
    let mut days = [false; 7];
    for part in w.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    day(a).ok_or(format!("`{a}` is not a day (mon..sun)"))?,
                    day(b).ok_or(format!("`{b}` is not a day (mon..sun)"))?,
                );
                let mut d = a;
                loop {
                    days[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day(part).ok_or(format!("`{part}` is not a day (mon..sun)"))?] = true,
        }
    }
    Ok(Some(days))
}

/// `Ok(None)`: the word is not an hour span.
fn parse_hours(w: &str) -> Result<Option<(u32, u32)>, String> {
    let Some((a, b)) = w.split_once('-') else {
        return Ok(None);
    };
    if !a.chars().all(|c| c.is_ascii_digit()) || a.is_empty() {
        return Ok(None);
    }
    let a: u32 = a
        .parse()
        .map_err(|_| format!("`{w}` is not an hour span"))?;
    let b: u32 = b
        .parse()
        .map_err(|_| format!("`{w}` is not an hour span: write e.g. 08-18"))?;
    if a > 23 || b > 24 || a == b {
        return Err(format!(
            "`{w}` is not an hour span: hours run 00-24 and the two ends differ"
        ));
    }
    Ok(Some((a, b % 24)))
}

/// When the hour `wall` falls in ends (the next moment a schedule may change).
pub fn next_hour(wall: DateTime<Utc>) -> DateTime<Utc> {
    let secs = wall.timestamp();
    DateTime::from_timestamp(secs - secs.rem_euclid(3600) + 3600, 0).unwrap_or(wall)
}

// ---------------------------------------------------------------------------------------
// The meter

/// Enforces a [`Rate`] on bytes written: a token bucket that starts empty, may go into debt by
/// the last write, and keeps at most a small burst when idle (so an idle hour does not become
/// a burst later). Pulse mode: `block` bytes, then silence for `delay`.
#[derive(Debug, Clone)]
pub struct Meter {
    tokens: f64,
    last: Option<Instant>,
    pulse_sent: u64,
    pulse_until: Option<Instant>,
}

/// What the meter allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Up to this many bytes may be written now.
    Bytes(u64),
    /// Nothing until then.
    Until(Instant),
}

impl Default for Meter {
    fn default() -> Self {
        Self::new()
    }
}

impl Meter {
    /// A meter with an empty bucket and no pulse under way.
    pub fn new() -> Self {
        Meter {
            tokens: 0.0,
            last: None,
            pulse_sent: 0,
            pulse_until: None,
        }
    }

    fn refill(&mut self, now: Instant, rate: u64) {
        let last = *self.last.get_or_insert(now);
        let dt = now.saturating_duration_since(last).as_secs_f64();
        self.last = Some(now.max(last));
        let burst = Self::slice(rate) as f64;
        self.tokens = (self.tokens + dt * rate as f64).min(burst);
    }

    /// The most written at once under a limit: about 20 ms of the rate, 16 KiB to 256 KiB.
    pub fn slice(rate: u64) -> u64 {
        (rate / 50).clamp(16 << 10, 256 << 10)
    }

    /// How much of `want` bytes may be written at `now` under `rate`.
    pub fn grant(&mut self, now: Instant, rate: Rate, want: u64) -> Grant {
        match rate {
            Rate::Unlimited => Grant::Bytes(want),
            Rate::Limit(r) => {
                self.refill(now, r);
                if self.tokens >= 0.0 {
                    Grant::Bytes(want.min(Self::slice(r)).max(1))
                } else {
                    let wait = -self.tokens / r as f64;
                    Grant::Until(now + Duration::from_secs_f64(wait))
                }
            }
            Rate::Pulse { block, delay_ms } => {
                if let Some(t) = self.pulse_until {
                    if now < t {
                        return Grant::Until(t);
                    }
                    self.pulse_until = None;
                    self.pulse_sent = 0;
                }
                let _ = delay_ms;
                Grant::Bytes(want.min(block.saturating_sub(self.pulse_sent)).max(1))
            }
        }
    }

    /// Counts `bytes` written at `now` under `rate`.
    pub fn on_sent(&mut self, now: Instant, rate: Rate, bytes: u64) {
        match rate {
            Rate::Unlimited => {}
            Rate::Limit(r) => {
                self.refill(now, r);
                self.tokens -= bytes as f64;
            }
            Rate::Pulse { block, delay_ms } => {
                self.pulse_sent += bytes;
                if self.pulse_sent >= block {
                    self.pulse_until = Some(now + Duration::from_millis(delay_ms));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn availability_lets_through_what_smss_four_choices_say() {
        use Priority::*;
        for (a, lets) in [
            (Availability::All, [true, true, true]),
            (Availability::MediumPlus, [true, true, false]),
            (Availability::High, [true, false, false]),
            (Availability::Closed, [false, false, false]),
        ] {
            assert_eq!(
                [a.allows(High), a.allows(Medium), a.allows(Low)],
                lets,
                "{a}"
            );
        }
    }

    #[test]
    fn rules_first_match_wins_and_hours_end_exclusive() {
        let w: Week<Availability> = Week::parse(
            "mon-fri 08-18 high; sat,sun closed; * all",
            Availability::All,
        )
        .unwrap();
        let z = chrono_tz::UTC;
        // 2026-11-23 is a Monday.
        assert_eq!(w.at(utc(2026, 11, 23, 7, 59), z), Availability::All);
        assert_eq!(w.at(utc(2026, 11, 23, 8, 0), z), Availability::High);
        assert_eq!(w.at(utc(2026, 11, 23, 17, 59), z), Availability::High);
        assert_eq!(w.at(utc(2026, 11, 23, 18, 0), z), Availability::All);
        assert_eq!(w.at(utc(2026, 11, 28, 12, 0), z), Availability::Closed);
        assert_eq!(w.at(utc(2026, 11, 29, 23, 59), z), Availability::Closed);
        assert_eq!(w.at(utc(2026, 11, 30, 0, 0), z), Availability::All);
    }

    #[test]
    fn spans_wrap_over_midnight_and_the_week_end() {
        let w: Week<Availability> = Week::parse("fri-mon 22-06 closed", Availability::All).unwrap();
        let z = chrono_tz::UTC;
        assert_eq!(w.at(utc(2026, 11, 27, 23, 0), z), Availability::Closed); // fri 23:00
        assert_eq!(w.at(utc(2026, 11, 23, 5, 0), z), Availability::Closed); // mon 05:00
        assert_eq!(w.at(utc(2026, 11, 23, 6, 0), z), Availability::All);
        assert_eq!(w.at(utc(2026, 11, 24, 23, 0), z), Availability::All); // tue
    }

    #[test]
    fn hours_are_those_of_the_sites_zone() {
        let w: Week<Availability> = Week::parse("mon 09-10 closed", Availability::All).unwrap();
        let seoul: chrono_tz::Tz = parse_zone("Asia/Seoul").unwrap();
        // Monday 09:30 in Seoul is Monday 00:30 UTC.
        assert_eq!(w.at(utc(2026, 11, 23, 0, 30), seoul), Availability::Closed);
        assert_eq!(
            w.at(utc(2026, 11, 23, 0, 30), chrono_tz::UTC),
            Availability::All
        );
        assert_eq!(w.at(utc(2026, 11, 23, 9, 30), seoul), Availability::All);
        // Across a DST change: Berlin is UTC+1 in winter, UTC+2 in summer.
        let berlin = parse_zone("Europe/Berlin").unwrap();
        assert_eq!(w.at(utc(2026, 11, 23, 8, 30), berlin), Availability::Closed);
        assert_eq!(w.at(utc(2026, 6, 22, 7, 30), berlin), Availability::Closed);
        assert!(parse_zone("Mars/Olympus").is_err());
    }

    #[test]
    fn rates_parse_and_print() {
        let w: Week<Rate> =
            Week::parse("mon-fri 08-18 2MiB/s; * 20MiB/s", Rate::Unlimited).unwrap();
        let z = chrono_tz::UTC;
        assert_eq!(w.at(utc(2026, 11, 23, 9, 0), z), Rate::Limit(2 << 20));
        assert_eq!(w.at(utc(2026, 11, 23, 19, 0), z), Rate::Limit(20 << 20));
        let p: Rate = "pulse 64KiB 2s".parse().unwrap();
        assert_eq!(
            p,
            Rate::Pulse {
                block: 64 << 10,
                delay_ms: 2000
            }
        );
        assert_eq!(p.to_string(), "pulse 64KiB 2s");
        assert_eq!(Rate::Limit(2 << 20).to_string(), "2MiB/s");
        for bad in [
            "mon-fri 2MiB",
            "mon-fry 08-18 all",
            "08-25 all",
            "mon-fri 08-18",
            "* fast",
        ] {
            let r: Result<Week<Rate>, _> = Week::parse(bad, Rate::Unlimited);
            let a: Result<Week<Availability>, _> = Week::parse(bad, Availability::All);
            assert!(r.is_err() && a.is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn meter_holds_a_rate_on_virtual_time() {
        let t0 = Instant::now();
        let rate = Rate::Limit(1 << 20);
        let mut m = Meter::new();
        let mut now = t0;
        let mut sent = 0u64;
        while now < t0 + Duration::from_secs(10) {
            match m.grant(now, rate, 1 << 20) {
                Grant::Bytes(n) => {
                    m.on_sent(now, rate, n);
                    sent += n;
                }
                // A timer that fires a little late, as a real one does.
                Grant::Until(t) => now = t + Duration::from_micros(700),
            }
        }
        let ratio = sent as f64 / (10u64 << 20) as f64;
        assert!(
            (0.98..1.02).contains(&ratio),
            "sent {sent} in 10 s: {ratio}"
        );
    }

    #[test]
    fn an_idle_meter_does_not_save_up_a_burst() {
        let t0 = Instant::now();
        let rate = Rate::Limit(1 << 20);
        let mut m = Meter::new();
        assert!(matches!(m.grant(t0, rate, 1), Grant::Bytes(1)));
        m.on_sent(t0, rate, 1);
        let later = t0 + Duration::from_secs(3600);
        let mut burst = 0;
        while let Grant::Bytes(n) = m.grant(later, rate, 1 << 30) {
            m.on_sent(later, rate, n);
            burst += n;
        }
        assert!(burst <= 2 * Meter::slice(1 << 20), "burst {burst}");
    }

    #[test]
    fn pulse_mode_sends_a_block_then_pauses() {
        let t0 = Instant::now();
        let rate = Rate::Pulse {
            block: 64 << 10,
            delay_ms: 2000,
        };
        let mut m = Meter::new();
        assert_eq!(m.grant(t0, rate, 1 << 20), Grant::Bytes(64 << 10));
        m.on_sent(t0, rate, 40 << 10);
        assert_eq!(m.grant(t0, rate, 1 << 20), Grant::Bytes(24 << 10));
        m.on_sent(t0, rate, 24 << 10);
        assert_eq!(
            m.grant(t0 + Duration::from_millis(10), rate, 1 << 20),
            Grant::Until(t0 + Duration::from_secs(2))
        );
        assert_eq!(
            m.grant(t0 + Duration::from_secs(2), rate, 1 << 20),
            Grant::Bytes(64 << 10)
        );
    }
}
