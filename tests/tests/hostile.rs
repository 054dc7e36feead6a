//! Hostile peers and failing disks, end to end on 127.0.0.1: what a peer sends is believed
//! only as far as its place in the tree allows, and an I/O error is never taken for damage.

use tests::{
    complete, distribute, link_child, link_parent, messages, publish, sample_tree, TestSite,
};

/// CEN -> S01, both running.
fn two_tiers() -> (TestSite, TestSite) {
    let mut cen = TestSite::init("CEN");
    let mut s01 = TestSite::init("S01");
    link_child(&cen, &s01);
    cen.start();
    link_parent(&s01, &cen);
    s01.start();
    (cen, s01)
}

#[test]
fn a_chunk_the_top_cannot_read_is_kept_and_sent_once_it_reads_again() {
    let (cen, s01) = two_tiers();
    let src = cen.tmp.path().join("src");
    sample_tree(&src);
    let pkg = publish(&cen, &src, &["--name", "Sample"]);
    // The top holds the only copy of every chunk. One of them cannot be read: a directory
    // where its file was (opening works, reading fails with EISDIR, an I/O error).
    let (victim, _) = cen
        .store_listing()
        .into_iter()
        .next()
        .expect("a chunk file at CEN");
    let kept = cen.tmp.path().join("kept-chunk");
    std::fs::rename(&victim, &kept).unwrap();
    std::fs::create_dir(&victim).unwrap();
    distribute(&cen, &pkg, "S01");
    cen.wait_until(30, "40207 (unreadable) at CEN", || {
        !messages(&cen, 40207).is_empty()
    });
    assert!(
        messages(&cen, 40204).is_empty(),
        "an I/O error was taken for a corrupt chunk: {:?}",
        messages(&cen, 40204)
    );
    assert!(victim.is_dir(), "the unreadable chunk was removed");
    assert!(!complete(&s01, &pkg, 1));
    // The disk reads again: the child's next ask gets the chunk.
    std::fs::remove_dir(&victim).unwrap();
    std::fs::rename(&kept, &victim).unwrap();
    s01.wait_until(60, "the package complete at S01", || {
        complete(&s01, &pkg, 1)
    });
    assert!(messages(&cen, 40204).is_empty());
}
