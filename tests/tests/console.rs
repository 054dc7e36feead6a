//! The operator's console and `/metrics` of real processes on 127.0.0.1: a headless
//! Chromium signs in and watches a three-tier tree live, `/metrics` parses as Prometheus
//! text and its counters move as a package is sent, and foreign Hosts and Origins are
//! refused.

use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tests::{
    complete, distribute, link_child, link_parent, prometheus_value as value, publish, sample_tree,
    three_tiers, TestSite,
};

/// The console's address (`127.0.0.1:PORT`) and the viewer token.
fn console(site: &TestSite) -> (String, String) {
    let url = site
        .local()
        .ui_url()
        .expect("the console's URL in admin.json");
    let addr = url
        .strip_prefix("http://")
        .expect("a loopback console is plain HTTP");
    (
        addr.to_string(),
        site.local().ui_token().expect("viewer token"),
    )
}

/// One raw request; returns the status and the whole answer (head and body).
fn raw(addr: &str, request: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn get(addr: &str, path: &str, headers: &str) -> (u16, String) {
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n"),
    )
}

/// `/metrics` with the viewer token, parsed by a Prometheus text-format parser.
fn scrape(site: &TestSite) -> prometheus_parse::Scrape {
    let (addr, token) = console(site);
    let (st, out) = get(
        &addr,
        "/metrics",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(st, 200, "{out}");
    tests::prometheus_text(out.split_once("\r\n\r\n").unwrap().1)
}

#[test]
fn metrics_parse_as_prometheus_text_and_the_counters_move_as_a_package_is_sent() {
    let mut cen = TestSite::init("CEN");
    let mut p01 = TestSite::init("P01");
    link_child(&cen, &p01);
    cen.start();
    link_parent(&p01, &cen);
    p01.start();
    cen.wait_until(30, "the link to P01 up", || {
        value(&scrape(&cen), "siterep_link_up", &[("peer", "P01")]) == 1.0
    });
    // Without a token: refused, and nothing is shown.
    let (addr, _) = console(&cen);
    let (st, out) = get(&addr, "/metrics", "");
    assert_eq!(st, 401, "{out}");
    assert!(!out.contains("siterep_"), "{out}");
    let (st, _) = get(&addr, "/metrics", "Authorization: Bearer nottheright\r\n");
    assert_eq!(st, 401);

    let before = scrape(&cen);
    let sent_before = value(&before, "siterep_sent_bytes_total", &[("peer", "P01")]);
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    distribute(&cen, &pkg, "P01");
    p01.wait_until(30, "the package complete at P01", || {
        complete(&p01, &pkg, 1)
    });
    let after = scrape(&cen);
    let sent = value(&after, "siterep_sent_bytes_total", &[("peer", "P01")]) - sent_before;
    let at_p01 = scrape(&p01);
    let received = value(&at_p01, "siterep_received_bytes_total", &[("peer", "CEN")]);
    let fetched = value(&at_p01, "siterep_chunks_fetched_total", &[("peer", "CEN")]);
    let verified = value(&at_p01, "siterep_chunks_verified_total", &[("peer", "CEN")]);
    let chunks = tests::content_row(&p01, &pkg).unwrap()["chunks"]
        .as_f64()
        .unwrap();
    assert!(
        received > 0.0 && sent >= received,
        "sent {sent} received {received}"
    );
    assert_eq!(
        (fetched, verified),
        (chunks, chunks),
        "every chunk fetched once, verified"
    );
    assert_eq!(value(&at_p01, "siterep_chunks_refused_total", &[]), 0.0);
    assert!(
        value(&after, "siterep_config_log_events", &[])
            > value(&before, "siterep_config_log_events", &[])
    );
    assert_eq!(
        value(&after, "siterep_child_backlog_events", &[("peer", "P01")]),
        0.0
    );
    assert!(
        value(
            &after,
            "siterep_status_messages_total",
            &[("severity", "info")]
        ) > 0.0
    );
    // Every site metric the alert rules and the dashboard under contrib/ use exists.
    for name in tests::contrib_metric_names() {
        if !name.starts_with("siterep_dp_") {
            assert!(
                tests::scrape_has(&after, &name) || tests::scrape_has(&at_p01, &name),
                "contrib/ uses {name}, which site-server does not serve"
            );
        }
    }
    for f in [
        "siterep_sent_bytes",
        "siterep_link_connects",
        "siterep_status_messages",
    ] {
        let t = after.docs.get(f).map(|_| ());
        assert!(t.is_some(), "{f} has its HELP line");
    }
}

#[test]
fn a_request_with_a_foreign_host_or_origin_is_refused() {
    let mut cen = TestSite::init("CEN");
    cen.start();
    let (addr, token) = console(&cen);
    let port = addr.rsplit_once(':').unwrap().1;
    let req = |host: &str, extra: &str| {
        raw(
            &addr,
            &format!("GET /login HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n"),
        )
    };
    assert_eq!(req(&addr, "").0, 200);
    assert_eq!(req(&format!("localhost:{port}"), "").0, 200);
    // DNS rebinding: a name that resolves here but is not this console's.
    let (st, out) = req(&format!("attacker.example:{port}"), "");
    assert_eq!(st, 403, "{out}");
    assert!(out.contains("attacker.example"), "{out}");
    // A page of another origin asking.
    let (st, _) = req(&addr, "Origin: http://attacker.example\r\n");
    assert_eq!(st, 403);
    // Even signed in: a cross-origin sign-in post is refused, and sets no cookie.
    let body = format!("token={token}");
    let (st, out) = raw(
        &addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://attacker.example\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(st, 403);
    assert!(!out.to_ascii_lowercase().contains("set-cookie"), "{out}");
}

/// Where this test's screenshots go.
fn shots() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chromium() -> PathBuf {
    for p in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("no chromium: install Debian's chromium (apt-get install chromium); .ci/run does");
}

fn eval(tab: &Tab, js: &str) -> serde_json::Value {
    tab.evaluate(js, false)
        .expect("evaluate")
        .value
        .unwrap_or(serde_json::Value::Null)
}

fn wait_js(tab: &Tab, secs: u64, what: &str, js: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if eval(tab, js) == serde_json::Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let html = eval(tab, "document.body ? document.body.innerHTML : ''");
            panic!("{what}: not within {secs}s; page: {html}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn screenshot(tab: &Tab, name: &str) {
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

fn sign_in(tab: &Tab, base: &str, token: &str) {
    tab.navigate_to(&format!("{base}/login")).unwrap();
    tab.wait_until_navigated().unwrap();
    tab.wait_for_element("input[name=token]")
        .unwrap()
        .click()
        .unwrap();
    tab.type_str(token).unwrap();
    tab.press_key("Enter").unwrap();
    tab.wait_until_navigated().unwrap();
}

#[test]
fn the_console_shows_the_tree_live_in_a_browser_and_refuses_a_wrong_token() {
    let (cen, mut p01, s01) = three_tiers();
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    distribute(&cen, &pkg, "S01");
    s01.wait_until(60, "the package complete at S01", || {
        complete(&s01, &pkg, 1)
    });
    let (addr, token) = console(&cen);
    let base = format!("http://{addr}");

    let browser = Browser::new(
        LaunchOptions::default_builder()
            .path(Some(chromium()))
            .headless(true)
            .sandbox(false)
            .window_size(Some((1280, 800)))
            .idle_browser_timeout(Duration::from_secs(120))
            .build()
            .unwrap(),
    )
    .expect("start headless chromium");
    let tab = browser.new_tab().unwrap();

    // No token: every page sends to the sign-in page; a wrong one is refused.
    tab.navigate_to(&format!("{base}/hierarchy")).unwrap();
    tab.wait_until_navigated().unwrap();
    assert!(tab.get_url().ends_with("/login"), "{}", tab.get_url());
    sign_in(&tab, &base, "0000wrong");
    wait_js(
        &tab,
        10,
        "the wrong token refused",
        "!!document.getElementById('error')",
    );
    screenshot(&tab, "login-refused");
    tab.navigate_to(&format!("{base}/content")).unwrap();
    tab.wait_until_navigated().unwrap();
    assert!(tab.get_url().ends_with("/login"), "still signed out");

    sign_in(&tab, &base, &token);
    wait_js(
        &tab,
        60,
        "three sites active",
        "['CEN','P01','S01'].every(c => { const r = document.querySelector(`#hierarchy tr[data-site=${c}]`); return r && r.dataset.state === 'active'; })",
    );
    screenshot(&tab, "hierarchy");

    tab.navigate_to(&format!("{base}/content")).unwrap();
    tab.wait_until_navigated().unwrap();
    wait_js(
        &tab,
        60,
        "the package at 100% at S01",
        &format!("(() => {{ const r = document.querySelector('section[data-package={pkg}] tr[data-site=S01]'); return !!r && r.dataset.pct === '100'; }})()"),
    );
    screenshot(&tab, "content");
    for p in ["senders", "messages", "adverts"] {
        tab.navigate_to(&format!("{base}/{p}")).unwrap();
        tab.wait_until_navigated().unwrap();
        wait_js(&tab, 10, p, "!!document.getElementById('live')");
        screenshot(&tab, p);
    }

    // Kill P01: the hierarchy page says so without a reload.
    tab.navigate_to(&format!("{base}/hierarchy")).unwrap();
    tab.wait_until_navigated().unwrap();
    wait_js(
        &tab,
        30,
        "P01 active",
        "document.querySelector('#hierarchy tr[data-site=P01]')?.dataset.state === 'active'",
    );
    eval(&tab, "window.__notReloaded = true");
    p01.kill9();
    wait_js(
        &tab,
        90,
        "P01 degraded or failed",
        "['degraded','failed'].includes(document.querySelector('#hierarchy tr[data-site=P01]')?.dataset.state)",
    );
    assert_eq!(
        eval(&tab, "window.__notReloaded === true"),
        serde_json::Value::Bool(true),
        "the page was updated in place"
    );
    wait_js(
        &tab,
        10,
        "S01 behind P01 marked as a last word",
        "document.querySelector('#hierarchy tr[data-site=S01]')?.dataset.known === 'stale'",
    );
    screenshot(&tab, "hierarchy-p01-down");
}

/// Accepts exactly one certificate (the site's), with a real handshake signature check.
#[derive(Debug)]
struct Pinned(
    rustls::pki_types::CertificateDer<'static>,
    std::sync::Arc<rustls::crypto::CryptoProvider>,
);

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.0.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("not the site's certificate".into()))
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

#[test]
fn a_console_with_a_named_certificate_speaks_tls_only() {
    use rustls::pki_types::pem::PemObject;
    let mut cen = TestSite::init("CEN");
    let (cert, key) = (
        cen.data().join("tls/cert.pem"),
        cen.data().join("tls/key.pem"),
    );
    let toml = cen.data().join("site.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        format!(
            "{text}\n[ui]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    cen.start();
    let url = cen.local().ui_url().unwrap();
    let addr = url
        .strip_prefix("https://")
        .expect("an https URL")
        .to_string();
    // Plain HTTP gets no page.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        !String::from_utf8_lossy(&out).contains("200 OK"),
        "plain HTTP answered"
    );

    // TLS with the site's certificate: the sign-in page, and a Secure cookie.
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(Pinned(der, provider)))
        .with_no_client_auth();
    let tls_request = |req: String| -> String {
        let conn = rustls::ClientConnection::new(
            std::sync::Arc::new(cfg.clone()),
            "127.0.0.1".try_into().unwrap(),
        )
        .unwrap();
        let tcp = std::net::TcpStream::connect(&addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let page = tls_request(format!(
        "GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ));
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("Sign in"), "{page}");
    let token = cen.local().ui_token().unwrap();
    let body = format!("token={token}");
    let answer = tls_request(format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://{addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let cookie = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("no cookie: {answer}"));
    assert!(
        cookie.contains("Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}
