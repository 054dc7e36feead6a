//! The README's status-message table lists every id of the catalogue, and `site-server status
//! catalogue` prints them. (Being an integration test of this package, it also makes
//! `cargo test --workspace` build the `site-server` binary that the end-to-end tests run.)

#[test]
fn readme_lists_every_status_message() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_site-server"))
        .args(["status", "catalogue", "--json"])
        .output()
        .expect("run site-server");
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md at the workspace root");
    let mut missing = Vec::new();
    for r in rows.as_array().unwrap() {
        let id = r["id"].as_u64().unwrap();
        if !readme.contains(&format!("| {id} |")) {
            missing.push(id);
        }
    }
    assert_eq!(
        rows.as_array().unwrap().len(),
        schema::status::CATALOGUE.len()
    );
    assert!(
        missing.is_empty(),
        "README.md's status table lacks ids {missing:?}"
    );
}
