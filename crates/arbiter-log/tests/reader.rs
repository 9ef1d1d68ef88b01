//! The read-only reader: following, proving and consistency from the files
//! alone, next to (or after) a writer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

use arbiter_log::*;
use serde_json::json;

fn rec(i: u64) -> DecisionRecord {
    let ctx = json!({"i": i, "pad": "x".repeat(64)});
    DecisionRecord {
        decision_id: format!("r-{i}"),
        ts_us: 1_700_000_000_000_000 + i as i64,
        subject: SubjectRef {
            kind: "Agent".into(),
            id: format!("agent-{i}"),
            agent_id: None,
            credential_id: None,
        },
        action: "fs:read".into(),
        resource: EntityRef {
            kind: "File".into(),
            id: format!("/f/{i}"),
        },
        context_digest: context_digest(&ctx).unwrap(),
        context: ctx,
        policy_version: "v".into(),
        ..DecisionRecord::default()
    }
}

fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions {
        node_id: "n1".into(),
        checkpoint_every: Duration::from_secs(3600),
        segment_bytes,
        ..LogOptions::default()
    }
}

fn all(dir: &Path) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    Follower::new(dir)
        .poll(&mut |i, r| {
            out.push((i, r.decision_id));
            ControlFlow::Continue(())
        })
        .unwrap();
    out
}

/// Every file under `dir` (tiles and index files included) with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            } else {
                let name = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push((name, fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

#[test]
fn follower_reads_across_segments_incrementally() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = Log::open(&dir, opts(1024)).unwrap();
    for i in 0..10 {
        log.append_blocking(rec(i)).unwrap();
    }
    let mut f = Follower::new(&dir);
    let mut seen = Vec::new();
    f.poll(&mut |i, r| {
        seen.push((i, r.decision_id));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen.len(), 10);
    for i in 10..40 {
        log.append_blocking(rec(i)).unwrap();
    }
    f.poll(&mut |i, r| {
        seen.push((i, r.decision_id));
        ControlFlow::Continue(())
    })
    .unwrap();
    log.shutdown().unwrap();
    assert!(segment::list_segments(&dir).unwrap().len() > 3);
    let want: Vec<_> = (0..40).map(|i| (i, format!("r-{i}"))).collect();
    assert_eq!(seen, want);
    assert_eq!(f.next_index(), 40);
    assert_eq!(all(&dir), want);

    // Breaking stops right after the record.
    let mut f = Follower::new(&dir);
    f.poll(&mut |i, _| {
        if i == 4 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(f.next_index(), 5);
}

/// `Follower::since` skips the segments sealed with every record older than a time;
/// `Follower::at_record` starts at the segment holding a record.
#[test]
fn followers_start_at_a_time_or_a_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = Log::open(&dir, opts(1024)).unwrap();
    // Records 0..30 a second apart, then 30..40 a day later.
    let at = |i: u64| {
        let day = if i >= 30 { 86_400_000_000 } else { 0 };
        1_700_000_000_000_000 + i as i64 * 1_000_000 + day
    };
    for i in 0..40 {
        log.append_blocking(DecisionRecord {
            ts_us: at(i),
            ..rec(i)
        })
        .unwrap();
    }
    // Segments are sealed in the background: a segment without its seal yet is read (the
    // conservative side); after shutdown every finished one is sealed.
    log.shutdown().unwrap();
    let segments = segment::list_segments(&dir).unwrap();
    assert!(segments.len() > 4, "{segments:?}");
    let first_of = |i: u64| {
        segments
            .iter()
            .rev()
            .map(|s| s.0)
            .find(|&f| f <= i)
            .unwrap()
    };
    let read = |mut f: Follower| {
        let mut seen = Vec::new();
        f.poll(&mut |i, _| {
            seen.push(i);
            ControlFlow::Continue(())
        })
        .unwrap();
        seen
    };

    // Everything from the day after: at most the segment holding record 30 and what follows.
    let f = Follower::since(&dir, at(30)).unwrap();
    assert_eq!(f.next_index(), first_of(30));
    assert_eq!(read(f), (first_of(30)..40).collect::<Vec<_>>());
    // A time in the middle of a segment starts at that segment, not after it.
    let f = Follower::since(&dir, at(17)).unwrap();
    assert!(f.next_index() <= 17 && f.next_index() == first_of(17));
    // Before everything, after everything.
    assert_eq!(Follower::since(&dir, 0).unwrap().next_index(), 0);
    let last = segments.last().unwrap().0;
    assert_eq!(Follower::since(&dir, i64::MAX).unwrap().next_index(), last);

    for i in [0, 1, 17, 30, 39] {
        let f = Follower::at_record(&dir, i).unwrap();
        assert_eq!(f.next_index(), first_of(i));
        assert_eq!(*read(f).last().unwrap(), 39);
    }
    assert_eq!(Follower::at_record(&dir, 1_000).unwrap().next_index(), last);

    // An empty directory: from the start, nothing to read.
    let empty = tmp.path().join("none");
    assert_eq!(Follower::since(&empty, 5).unwrap().next_index(), 0);
    assert_eq!(Follower::at_record(&empty, 5).unwrap().next_index(), 0);
}

#[test]
fn prove_dir_matches_the_writer_and_is_read_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = Log::open(&dir, opts(2048)).unwrap();
    for i in 0..25 {
        log.append_blocking(rec(i)).unwrap();
    }
    let from_writer = log.prove("r-13").unwrap();
    log.shutdown().unwrap();
    let cp = latest_checkpoint(&dir).unwrap().unwrap();
    assert_eq!(cp.tree_size, 25);
    let b = prove_dir(&dir, "r-13").unwrap();
    assert_eq!(b.record, from_writer.record);
    assert_eq!(b.leaf_hash, from_writer.leaf_hash);
    assert_eq!(b.tree_size, 25);
    check_proof(&b, Some(&PublicKey::from_hex(&b.public_key).unwrap())).unwrap();

    // A torn tail (a write in progress) is ignored and left alone.
    let segs = segment::list_segments(&dir).unwrap();
    let last = &segs.last().unwrap().1;
    let mut bytes = fs::read(last).unwrap();
    let mut frames = segment::FrameIter::new(&bytes);
    frames.by_ref().for_each(drop);
    let end = frames.offset();
    let torn = [200, 0, 0, 0, 1, 2];
    if bytes.len() < end + torn.len() {
        bytes.resize(end + torn.len(), 0);
    }
    bytes[end..end + torn.len()].copy_from_slice(&torn);
    fs::write(last, &bytes).unwrap();
    let before = snapshot(&dir);
    assert_eq!(prove_dir(&dir, "r-24").unwrap().leaf_index, 24);
    assert_eq!(all(&dir).len(), 25);
    assert!(matches!(
        prove_dir(&dir, "nope"),
        Err(LogError::NotFound(_))
    ));
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn prove_dir_refuses_records_newer_than_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = Log::open(&dir, opts(64 << 20)).unwrap();
    for i in 0..3 {
        log.append_blocking(rec(i)).unwrap();
    }
    let cp = log.force_checkpoint().unwrap();
    assert_eq!(cp.tree_size, 3);
    log.append_blocking(rec(3)).unwrap();
    // The writer is still live: no checkpoint covers record 3 yet.
    let err = prove_dir(&dir, "r-3").unwrap_err();
    assert!(
        matches!(
            err,
            LogError::NotYetCheckpointed {
                index: 3,
                checkpoint_size: 3
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("retry after the next checkpoint"));
    let b = prove_dir(&dir, "r-1").unwrap();
    assert_eq!(b.tree_size, 3);
    check_proof(&b, Some(&log.public_key())).unwrap();
    log.shutdown().unwrap();
}

#[test]
fn consistency_dir_proves_growth_and_detects_forks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = Log::open(&dir, opts(1500)).unwrap();
    for i in 0..7 {
        log.append_blocking(rec(i)).unwrap();
    }
    let old = log.force_checkpoint().unwrap();
    for i in 7..30 {
        log.append_blocking(rec(i)).unwrap();
    }
    let new = log.force_checkpoint().unwrap();
    let key = log.public_key();
    let proof = consistency_dir(&dir, &old, &new).unwrap();
    assert_eq!(proof, log.consistency(&old, &new).unwrap());
    check_consistency(&old, &new, &proof, &key).unwrap();
    assert_eq!(read_checkpoints(&dir).unwrap().last(), Some(&new));

    let mut forged = old.clone();
    forged.root_hash = "ab".repeat(32);
    assert!(matches!(
        consistency_dir(&dir, &forged, &new),
        Err(LogError::CheckpointMismatch { .. })
    ));
    let mut too_big = new.clone();
    too_big.tree_size = 1000;
    assert!(matches!(
        consistency_dir(&dir, &old, &too_big),
        Err(LogError::TruncatedBehindCheckpoint { .. })
    ));
    log.shutdown().unwrap();
}

#[test]
fn newest_records_page_backwards_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let (log, _) = Log::open(&dir, opts(1024)).unwrap();
    for i in 0..40 {
        let outcome = if i % 3 == 0 {
            Outcome::Deny
        } else {
            Outcome::Allow
        };
        log.append_blocking(DecisionRecord {
            outcome,
            ts_us: 1_700_000_000_000_000 + i as i64 * 1_000_000,
            ..rec(i)
        })
        .unwrap();
    }
    log.shutdown().unwrap();
    assert!(segment::list_segments(&dir).unwrap().len() > 4);
    let all = RecordFilter::default();
    let indexes = |page: &[(u64, DecisionRecord)]| page.iter().map(|r| r.0).collect::<Vec<_>>();

    // The newest first, page after page, each page continuing where the last stopped.
    let (page, next) = newest_records(&dir, &all, None, 7).unwrap();
    assert_eq!(indexes(&page), (33..40).rev().collect::<Vec<_>>());
    assert_eq!(next, Some(33));
    let (page, next) = newest_records(&dir, &all, next, 30).unwrap();
    assert_eq!(indexes(&page), (3..33).rev().collect::<Vec<_>>());
    let (page, next) = newest_records(&dir, &all, next, 30).unwrap();
    assert_eq!(indexes(&page), vec![2, 1, 0]);
    assert_eq!(next, None);

    // With a filter: the newest denials only.
    let denials = RecordFilter {
        outcome: Some(Outcome::Deny),
        ..RecordFilter::default()
    };
    let (page, next) = newest_records(&dir, &denials, None, 4).unwrap();
    assert_eq!(indexes(&page), vec![39, 36, 33, 30]);
    let (page, next) = newest_records(&dir, &denials, next, 100).unwrap();
    assert_eq!(indexes(&page), vec![27, 24, 21, 18, 15, 12, 9, 6, 3, 0]);
    assert_eq!(next, None);

    // `since` stops the scan at the sealed segments wholly older than it, with the same answer.
    let recent = RecordFilter {
        since_us: Some(1_700_000_000_000_000 + 35 * 1_000_000),
        ..RecordFilter::default()
    };
    let (page, next) = newest_records(&dir, &recent, None, 100).unwrap();
    assert_eq!(indexes(&page), (35..40).rev().collect::<Vec<_>>());
    assert_eq!(next, None);
    assert!(newest_records(&dir, &all, None, 0).unwrap().0.is_empty());
}

#[test]
fn a_record_summary_reads_what_the_full_record_says() {
    let mut r = rec(7);
    r.subject.agent_id = Some("bot \"quoted\" \u{e9}".into());
    r.enforcement_point = "mcp:fs\\x".into();
    r.determining_policies = vec!["p\n1".into(), "p2".into()];
    r.outcome = Outcome::RequireApproval;
    let mut bytes = Vec::new();
    r.write_canonical(&mut bytes).unwrap();
    let s = RecordSummary::from_bytes(&bytes).unwrap();
    assert_eq!(s.ts_us, r.ts_us);
    assert_eq!(s.outcome, r.outcome);
    assert_eq!(s.enforcement_point, r.enforcement_point);
    assert_eq!(s.subject.kind, r.subject.kind);
    assert_eq!(s.subject.id, r.subject.id);
    assert_eq!(s.subject.agent_id.as_deref(), r.subject.agent_id.as_deref());
    let policies: Vec<String> = s
        .determining_policies
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(policies, r.determining_policies);
    assert!(RecordSummary::from_bytes(b"{\"ts_us\":1}").is_err());
    assert!(RecordSummary::from_bytes(b"not json").is_err());
}
