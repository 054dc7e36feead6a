//! Who may look, decided without I/O: the Host and Origin checks (DNS rebinding, cross-site
//! requests), the tokens, and the session cookie. Pure: the time and the tokens are
//! arguments.
//!
//! A session cookie is `v1.ROLE.EXPIRY.MAC`: MAC is HMAC-SHA256, keyed by a hash of the
//! token that signed in, over `ROLE.EXPIRY`. Nothing is kept server-side: a new viewer token
//! (`ui token --new`) ends every viewer session, a daemon restart (a new admin token) every
//! admin one.

use ring::hmac;

/// The cookie's name.
pub const COOKIE: &str = "siterep_session";

/// How long a session lasts.
pub const SESSION_SECS: i64 = 12 * 3600;

/// Who signed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// The tokens in force now.
#[derive(Clone, Debug)]
pub struct Tokens {
    pub viewer: String,
    pub admin: String,
}

/// Compares two secrets without stopping at the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// The role a presented token gives, if any.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let p = presented.trim().as_bytes();
        if !self.viewer.is_empty() && constant_time_eq(p, self.viewer.as_bytes()) {
            Some(Role::Viewer)
        } else if !self.admin.is_empty() && constant_time_eq(p, self.admin.as_bytes()) {
            Some(Role::Admin)
        } else {
            None
        }
    }

    fn key(&self, role: Role) -> hmac::Key {
        let token = match role {
            Role::Viewer => &self.viewer,
            Role::Admin => &self.admin,
        };
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        hmac::Key::new(hmac::HMAC_SHA256, d.as_ref())
    }

    /// A cookie value for `role`, valid until `now + SESSION_SECS`.
    pub fn session(&self, role: Role, now: i64) -> String {
        let body = format!("{}.{}", role.as_str(), now + SESSION_SECS);
        let tag = hmac::sign(&self.key(role), body.as_bytes());
        format!("v1.{body}.{}", hex::encode(tag.as_ref()))
    }

    /// The role a cookie value proves at `now`: signed by a token still in force, not expired.
    pub fn check_session(&self, value: &str, now: i64) -> Option<Role> {
        let rest = value.strip_prefix("v1.")?;
        let (body, tag) = rest.rsplit_once('.')?;
        let (role, expiry) = body.split_once('.')?;
        let role = match role {
            "viewer" => Role::Viewer,
            "admin" => Role::Admin,
            _ => return None,
        };
        let expiry: i64 = expiry.parse().ok()?;
        if expiry <= now || expiry > now + SESSION_SECS {
            return None;
        }
        if role == Role::Viewer && self.viewer.is_empty() {
            return None;
        }
        let tag = hex::decode(tag).ok()?;
        hmac::verify(&self.key(role), body.as_bytes(), &tag).ok()?;
        Some(role)
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Why a request was refused before anything else looked at it.
#[derive(Debug, PartialEq, Eq)]
pub enum Foreign {
    NoHost,
    Host(String),
    Origin(String),
}

impl std::fmt::Display for Foreign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Foreign::NoHost => write!(f, "refused: the request names no Host"),
            Foreign::Host(h) => write!(
                f,
                "refused: Host {h:?} is not this console's (reach it by IP address, localhost, or a name in [ui] hosts)"
            ),
            Foreign::Origin(o) => write!(f, "refused: a request from another origin ({o:?})"),
        }
    }
}

/// The host part of `host[:port]` (brackets kept for IPv6), lower-cased.
fn host_part(hostport: &str) -> String {
    let h = hostport.trim().to_ascii_lowercase();
    if h.starts_with('[') {
        return match h.find(']') {
            Some(i) => h[..=i].to_string(),
            None => h,
        };
    }
    match h.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_string(),
        _ => h,
    }
}

/// Whether `host` (no port) is one this console answers to: an IP address (DNS rebinding
/// needs a name), `localhost`, or a name the operator listed.
fn host_allowed(host: &str, names: &[String]) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok()
        || host == "localhost"
        || names.iter().any(|n| n.eq_ignore_ascii_case(host))
}

/// Checks a request's Host and Origin headers: the Host must be one this console answers
/// to, and an Origin, when sent, must be this same host and port.
pub fn check_request(
    host: Option<&str>,
    origin: Option<&str>,
    names: &[String],
) -> Result<(), Foreign> {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return Err(Foreign::NoHost);
    };
    if !host_allowed(&host_part(host), names) {
        return Err(Foreign::Host(host.to_string()));
    }
    if let Some(o) = origin {
        let same = o
            .split_once("://")
            .filter(|(scheme, _)| *scheme == "http" || *scheme == "https")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
        if !same {
            return Err(Foreign::Origin(o.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            viewer: "v".repeat(64),
            admin: "a".repeat(64),
        }
    }

    #[test]
    fn a_session_is_the_role_its_token_signed_until_it_expires() {
        let t = tokens();
        let c = t.session(Role::Viewer, 1000);
        assert_eq!(t.check_session(&c, 1000), Some(Role::Viewer));
        assert_eq!(t.check_session(&c, 1000 + SESSION_SECS), None, "expired");
        let a = t.session(Role::Admin, 1000);
        assert_eq!(t.check_session(&a, 2000), Some(Role::Admin));
        // A cookie edited to claim admin does not verify.
        let forged = c.replacen("viewer", "admin", 1);
        assert_eq!(t.check_session(&forged, 1000), None);
        // A new viewer token ends the viewer sessions.
        let rotated = Tokens {
            viewer: "w".repeat(64),
            ..tokens()
        };
        assert_eq!(rotated.check_session(&c, 1000), None);
        assert_eq!(rotated.check_session(&a, 1000), Some(Role::Admin));
        for junk in [
            "",
            "v1.",
            "v1.viewer.x.y",
            "v2.viewer.99999.00",
            "v1.viewer.1.zz",
        ] {
            assert_eq!(t.check_session(junk, 0), None, "{junk:?}");
        }
    }

    #[test]
    fn tokens_give_their_role_and_nothing_else_gives_one() {
        let t = tokens();
        assert_eq!(t.role_of(&"v".repeat(64)), Some(Role::Viewer));
        assert_eq!(t.role_of(&"a".repeat(64)), Some(Role::Admin));
        assert_eq!(t.role_of(""), None);
        assert_eq!(t.role_of(&"v".repeat(63)), None);
    }

    #[test]
    fn only_this_consoles_hosts_and_its_own_origin_pass() {
        let names = vec!["console.example.org".to_string()];
        let ok = |h: &str, o: Option<&str>| check_request(Some(h), o, &names);
        assert_eq!(ok("127.0.0.1:4780", None), Ok(()));
        assert_eq!(ok("[::1]:4780", None), Ok(()));
        assert_eq!(ok("localhost:4780", Some("http://localhost:4780")), Ok(()));
        assert_eq!(
            ok("Console.Example.org", Some("https://console.example.org")),
            Ok(())
        );
        assert!(matches!(
            ok("evil.example.com:4780", None),
            Err(Foreign::Host(_))
        ));
        assert!(matches!(
            ok("127.0.0.1.evil.com", None),
            Err(Foreign::Host(_))
        ));
        assert!(matches!(
            ok("127.0.0.1:4780", Some("http://evil.example.com")),
            Err(Foreign::Origin(_))
        ));
        assert!(matches!(
            ok("127.0.0.1:4780", Some("null")),
            Err(Foreign::Origin(_))
        ));
        assert!(matches!(
            ok("127.0.0.1:4780", Some("http://127.0.0.1:4781")),
            Err(Foreign::Origin(_))
        ));
        assert_eq!(check_request(None, None, &names), Err(Foreign::NoHost));
        assert_eq!(cookie("a=1; siterep_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("a=1", COOKIE), None);
    }
}
