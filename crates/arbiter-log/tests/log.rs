//! Integration tests: the on-disk log end to end — group commit, recovery,
//! fault injection, proofs, and tamper detection by `verify_dir`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arbiter_log::segment::{self, CHECKPOINTS_FILE, FrameIter, Scan};
use arbiter_log::*;
use arbiter_testkit::{PATIENCE, wait_for};
use proptest::prelude::*;
use serde_json::json;

mod tile_client;

fn rec(i: u64, tag: &str) -> DecisionRecord {
    let ctx =
        json!({"i": i, "tag": tag, "args": {"path": format!("/tmp/{i}"), "n": i * 3, "f": 1.5}});
    DecisionRecord {
        decision_id: format!("{tag}-{i}"),
        ts_us: 1_700_000_000_000_000 + i as i64,
        subject: SubjectRef {
            kind: "Agent".into(),
            id: format!("agent-{}", i % 7),
            agent_id: Some("a".into()),
            credential_id: None,
        },
        action: "fs:read".into(),
        resource: EntityRef {
            kind: "File".into(),
            id: format!("/f/{i}"),
        },
        context_digest: context_digest(&ctx).unwrap(),
        context: ctx,
        outcome: if i.is_multiple_of(3) {
            Outcome::Allow
        } else {
            Outcome::Deny
        },
        determining_policies: vec!["p0".into()],
        reason_admin: "because".into(),
        reason_user: "no".into(),
        policy_version: "sha256:0".into(),
        engine: "cedar".into(),
        engine_version: "4".into(),
        enforcement_point: "authzen".into(),
        eval_us: 10,
        ..DecisionRecord::default()
    }
}

/// Options of most tests here: sealed segments stay uncompressed, so that tests can change
/// their frames byte by byte. The tests of compressed segments turn it on.
fn opts() -> LogOptions {
    LogOptions {
        node_id: "n1".into(),
        checkpoint_every: Duration::from_secs(3600),
        compress_sealed: false,
        ..LogOptions::default()
    }
}

fn open(dir: &Path, o: LogOptions) -> (Log, OpenReport) {
    Log::open(dir, o).unwrap()
}

/// Appends `n` records concurrently (tickets) and waits for them all.
fn fill(log: &Log, n: u64, tag: &str) -> Vec<Appended> {
    let tickets: Vec<_> = (0..n).map(|i| log.append_ticket(rec(i, tag))).collect();
    tickets.into_iter().map(|t| t.wait().unwrap()).collect()
}

/// Every record frame: (segment path, offset, frame length).
fn frames(dir: &Path) -> Vec<(PathBuf, usize, usize)> {
    let mut out = Vec::new();
    for (_, path) in segment::list_segments(dir).unwrap() {
        let buf = fs::read(&path).unwrap();
        for s in FrameIter::new(&buf) {
            match s {
                Scan::Frame { offset, payload } => {
                    out.push((path.clone(), offset, payload.len() + segment::HEADER_LEN))
                }
                Scan::Bad { .. } => panic!("bad frame"),
            }
        }
    }
    out
}

fn verify(dir: &Path, key: &PublicKey) -> VerifyReport {
    verify_dir(dir, Some(key), None).unwrap()
}

#[test]
fn append_prove_reopen_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.records, 0);
    let acks = fill(&log, 100, "a");
    for (i, a) in acks.iter().enumerate() {
        assert_eq!(a.seq, i as u64);
        assert_eq!(a.leaf_index, i as u64);
    }
    assert_eq!(log.tree_size(), 100);
    assert!(log.is_healthy());
    // get
    let r = log.get("a-42").unwrap().unwrap();
    assert_eq!(r.seq, 42);
    assert_eq!(r.node_id, "n1");
    assert!(log.get("nope").unwrap().is_none());
    assert_eq!(log.get_index(7).unwrap().unwrap().decision_id, "a-7");
    // prove forces a checkpoint
    assert!(log.latest_checkpoint().is_none_or(|c| c.tree_size < 100));
    let b = log.prove("a-42").unwrap();
    assert_eq!(b.tree_size, 100);
    assert_eq!(b.leaf_hash, hex::encode(acks[42].leaf_hash));
    let key = log.public_key();
    check_proof(&b, Some(&key)).unwrap();
    check_proof(&b, None).unwrap();
    // the bundle survives JSON
    let j = serde_json::to_string(&b).unwrap();
    let b2: InclusionProofBundle = serde_json::from_str(&j).unwrap();
    check_proof(&b2, Some(&key)).unwrap();
    // tampered bundles fail
    let mut t = b.clone();
    t.record["outcome"] = json!("require_approval");
    assert!(check_proof(&t, Some(&key)).is_err());
    let mut t = b.clone();
    t.leaf_index = 41;
    assert!(check_proof(&t, Some(&key)).is_err());
    let mut t = b.clone();
    t.proof.pop();
    assert!(check_proof(&t, Some(&key)).is_err());
    let mut t = b.clone();
    t.checkpoint.ts_us += 1;
    assert!(check_proof(&t, Some(&key)).is_err());
    let other = KeyPair::from_seed(&[9; 32]).public_key();
    assert!(matches!(
        check_proof(&b, Some(&other)),
        Err(VerifyError::KeyMismatch { .. })
    ));
    assert!(matches!(log.prove("nope"), Err(LogError::NotFound(_))));
    // consistency
    let cp1 = log.latest_checkpoint().unwrap();
    fill(&log, 37, "b");
    let cp2 = log.force_checkpoint().unwrap();
    assert_eq!(cp2.tree_size, 137);
    let p = log.consistency(&cp1, &cp2).unwrap();
    check_consistency(&cp1, &cp2, &p, &key).unwrap();
    let mut bad = p.clone();
    bad[0][0] ^= 1;
    assert!(check_consistency(&cp1, &cp2, &bad, &key).is_err());
    assert!(check_consistency(&cp2, &cp1, &p, &key).is_err());
    let root = log.root().unwrap();
    log.shutdown().unwrap();
    assert!(matches!(
        log.append_blocking(rec(0, "z")),
        Err(LogError::ShutDown)
    ));
    drop(log);
    // reopen
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.records, 137);
    assert_eq!(rep.truncated_tail_bytes, 0);
    assert_eq!(log.root().unwrap(), root);
    assert_eq!(log.latest_checkpoint().unwrap().tree_size, 137);
    let a = log.append_blocking(rec(1000, "c")).unwrap();
    assert_eq!(a.seq, 137);
    drop(log);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 138);
    assert!(v.checkpoints >= 3);
    // read API
    let all: Vec<_> = read_records(dir.path())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(all.len(), 138);
    for (i, (idx, r)) in all.iter().enumerate() {
        assert_eq!(*idx, i as u64);
        assert_eq!(r.seq, i as u64);
    }
    assert_eq!(all[137].1.decision_id, "c-1000");
}

#[test]
fn group_commit_64_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(
        dir.path(),
        LogOptions {
            checkpoint_every_records: 500,
            ..opts()
        },
    );
    let log = Arc::new(log);
    let mut handles = Vec::new();
    for t in 0..64u64 {
        let log = log.clone();
        handles.push(std::thread::spawn(move || {
            (0..40u64)
                .map(|i| {
                    let a = log.append_blocking(rec(t * 1000 + i, "g")).unwrap();
                    (a.seq, format!("g-{}", t * 1000 + i))
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut acked: Vec<(u64, String)> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    acked.sort();
    assert_eq!(acked.len(), 2560);
    for (i, (seq, _)) in acked.iter().enumerate() {
        assert_eq!(*seq, i as u64);
    }
    let key = log.public_key();
    drop(Arc::try_unwrap(log).unwrap());
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.records, 2560);
    for (seq, id) in &acked {
        assert_eq!(log.get(id).unwrap().unwrap().seq, *seq);
    }
    drop(log);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 2560);
}

/// The logical end of a segment file: just past its last frame.
fn logical_end(path: &Path) -> usize {
    let buf = fs::read(path).unwrap();
    let mut it = FrameIter::new(&buf);
    for s in it.by_ref() {
        assert!(matches!(s, Scan::Frame { .. }), "{s:?}");
    }
    it.offset()
}

/// Writes `bytes` at `at` of `path`, in place.
fn write_at(path: &Path, at: usize, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at as u64)).unwrap();
    f.write_all(bytes).unwrap();
}

/// The first non-zero byte at or after `from`, if any.
fn first_nonzero(path: &Path, from: usize) -> Option<usize> {
    let buf = fs::read(path).unwrap();
    buf[from..].iter().position(|b| *b != 0).map(|p| from + p)
}

#[test]
fn segments_are_preallocated_and_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 64 << 10,
        ..opts()
    };
    let (log, _) = open(dir.path(), o.clone());
    // a fresh log starts with a full-size, all-zero segment
    let seg0 = dir.path().join(segment::segment_name(0));
    assert_eq!(fs::metadata(&seg0).unwrap().len(), 64 << 10);
    assert_eq!(first_nonzero(&seg0, 0), None);
    fill(&log, 600, "z");
    let key = log.public_key();
    drop(log);
    let segs = segment::list_segments(dir.path()).unwrap();
    assert!(segs.len() >= 3, "{}", segs.len());
    for (_, path) in &segs {
        // every segment has its preallocated size and a zero tail
        assert_eq!(fs::metadata(path).unwrap().len(), 64 << 10);
        assert_eq!(first_nonzero(path, logical_end(path)), None);
    }
    assert_eq!(frames(dir.path()).len(), 600);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!((v.records, v.torn_tail_bytes), (600, 0));
    assert_eq!(read_records(dir.path()).unwrap().count(), 600);
    // reopening continues in place in the last segment
    let last = segs.last().unwrap().1.clone();
    let end = logical_end(&last);
    let (log, rep) = open(dir.path(), o);
    assert_eq!((rep.records, rep.truncated_tail_bytes), (600, 0));
    assert_eq!(log.append_blocking(rec(600, "z")).unwrap().seq, 600);
    drop(log);
    assert_eq!(
        segment::list_segments(dir.path()).unwrap().len(),
        segs.len()
    );
    assert!(logical_end(&last) > end);
    assert_eq!(fs::metadata(&last).unwrap().len(), 64 << 10);
    assert!(verify(dir.path(), &key).is_ok());
}

#[test]
fn torn_frame_before_the_zero_tail_is_zeroed_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), opts());
    fill(&log, 20, "t");
    let key = log.public_key();
    drop(log);
    let seg = dir.path().join(segment::segment_name(0));
    let size = fs::metadata(&seg).unwrap().len();
    let good = logical_end(&seg);
    // half a frame written in place: a write cut short by a crash
    let mut frame = Vec::new();
    segment::encode_frame(&rec(99, "x").canonical_bytes().unwrap(), &mut frame);
    let half = &frame[..frame.len() / 2];
    write_at(&seg, good, half);
    let torn = segment::nonzero_end(half) as u64;
    // verify before reopen: tolerated as a torn tail
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!((v.records, v.torn_tail_bytes), (20, torn));
    // readers stop before it
    assert_eq!(read_records(dir.path()).unwrap().count(), 20);
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.records, 20);
    assert_eq!(rep.truncated_tail_bytes, torn);
    // cut by zeroing: the file keeps its size and the zero tail is back
    assert_eq!(fs::metadata(&seg).unwrap().len(), size);
    assert_eq!(first_nonzero(&seg, good), None);
    assert_eq!(log.append_blocking(rec(20, "t")).unwrap().seq, 20);
    drop(log);
    // a complete final frame with a bad checksum, then zeros, is also torn
    let end = logical_end(&seg);
    let mut frame2 = Vec::new();
    segment::encode_frame(b"{\"garbage\":1}", &mut frame2);
    frame2[10] ^= 0xff;
    write_at(&seg, end, &frame2);
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.records, 21);
    assert_eq!(rep.truncated_tail_bytes, frame2.len() as u64);
    assert_eq!(first_nonzero(&seg, end), None);
    drop(log);
    // the zero tail alone is nothing to cut
    let (log, rep) = open(dir.path(), opts());
    assert_eq!((rep.records, rep.truncated_tail_bytes), (21, 0));
    drop(log);
    // garbage in checkpoints.log tail
    let cpf = dir.path().join(CHECKPOINTS_FILE);
    let mut f = fs::OpenOptions::new().append(true).open(&cpf).unwrap();
    std::io::Write::write_all(&mut f, &[1, 2, 3]).unwrap();
    drop(f);
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.truncated_checkpoint_bytes, 3);
    drop(log);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.torn_tail_bytes, 0);
}

#[test]
fn garbage_after_the_logical_end_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 16 << 10,
        ..opts()
    };
    let (log, _) = open(dir.path(), o.clone());
    fill(&log, 80, "g");
    let key = log.public_key();
    drop(log);
    let segs = segment::list_segments(dir.path()).unwrap();
    assert!(segs.len() >= 2, "{}", segs.len());
    for (which, (first, path)) in [segs.first().unwrap(), segs.last().unwrap()]
        .into_iter()
        .enumerate()
    {
        let orig = fs::read(path).unwrap();
        let end = logical_end(path);
        let size = orig.len();
        for at in [end + 8, end + 100, size - 1] {
            let mut b = orig.clone();
            b[at] = 0x42;
            fs::write(path, &b).unwrap();
            let what = format!("segment {which}, byte {at} (logical end {end})");
            // verify reports it at the record after the last good one
            let p = verify(dir.path(), &key).problem.expect(&what);
            let records = frames_until(path, end) + first;
            assert_eq!(
                (p.index, p.kind),
                (Some(records), ProblemKind::BadFraming),
                "{what}: {}",
                p.detail
            );
            assert!(
                p.detail.contains(&format!("offset {end}")),
                "{what}: {}",
                p.detail
            );
            // Open refuses it in the segment it reads (the last) and leaves the file
            // alone; the first segment is sealed, not read at open, and the damage
            // stays for verify to find.
            if which == 0 {
                let (log, _) = open(dir.path(), o.clone());
                drop(log);
                let p = verify(dir.path(), &key).problem.expect(&what);
                assert_eq!(p.index, Some(records), "{what}: {}", p.detail);
            } else {
                match Log::open(dir.path(), o.clone()).unwrap_err() {
                    LogError::Corrupt { offset, index, .. } => {
                        assert_eq!((offset, index), (end as u64, records), "{what}");
                    }
                    e => panic!("{what}: {e}"),
                }
            }
            assert_eq!(fs::read(path).unwrap(), b, "{what}");
            // readers report it too
            let err = read_records(dir.path())
                .unwrap()
                .find_map(|r| r.err())
                .expect(&what);
            assert!(matches!(err, LogError::Corrupt { .. }), "{what}: {err}");
            let mut follower = Follower::new(dir.path());
            let got = follower.poll_raw(&mut |_, _| std::ops::ControlFlow::Continue(()));
            if which == 0 {
                assert!(
                    matches!(got, Err(LogError::Corrupt { .. })),
                    "{what}: {got:?}"
                );
            }
        }
        fs::write(path, &orig).unwrap();
    }
    assert!(verify(dir.path(), &key).is_ok());
}

/// Frames in `path` before byte `end`.
fn frames_until(path: &Path, end: usize) -> u64 {
    let buf = fs::read(path).unwrap();
    FrameIter::new(&buf[..end]).count() as u64
}

#[test]
fn logs_without_zero_tails_open_verify_and_append() {
    // A log as written before preallocation: segment files end at their
    // last frame.
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 8 << 10,
        ..opts()
    };
    let (log, _) = open(dir.path(), o.clone());
    fill(&log, 50, "o");
    let key = log.public_key();
    drop(log);
    let _ = fs::remove_file(dir.path().join(segment::PREPARED_FILE));
    for (_, path) in segment::list_segments(dir.path()).unwrap() {
        let end = logical_end(&path);
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(end as u64)
            .unwrap();
    }
    let segs = segment::list_segments(dir.path()).unwrap();
    let last = segs.last().unwrap().1.clone();
    let last_len = fs::metadata(&last).unwrap().len();
    assert!(last_len < 8 << 10);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 50);
    assert_eq!(read_records(dir.path()).unwrap().count(), 50);
    // a torn frame at the end of the file, the old way
    let mut frame = Vec::new();
    segment::encode_frame(&rec(99, "x").canonical_bytes().unwrap(), &mut frame);
    let mut f = fs::OpenOptions::new().append(true).open(&last).unwrap();
    std::io::Write::write_all(&mut f, &frame[..frame.len() - 3]).unwrap();
    drop(f);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert!(v.torn_tail_bytes > 0);
    let (log, rep) = open(dir.path(), o.clone());
    assert_eq!(rep.records, 50);
    assert_eq!(
        rep.truncated_tail_bytes,
        segment::nonzero_end(&frame[..frame.len() - 3]) as u64
    );
    // the old last segment is kept as it is (its torn frame zeroed); new
    // records go to a new, preallocated segment
    assert_eq!(log.append_blocking(rec(50, "o")).unwrap().seq, 50);
    fill(&log, 30, "p");
    drop(log);
    assert_eq!(first_nonzero(&last, last_len as usize), None);
    let segs2 = segment::list_segments(dir.path()).unwrap();
    assert_eq!(segs2[segs.len()].0, 50);
    assert_eq!(fs::metadata(&segs2[segs.len()].1).unwrap().len(), 8 << 10);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 81);
    let (log, rep) = open(dir.path(), o);
    assert_eq!(rep.records, 81);
    assert_eq!(log.get("o-7").unwrap().unwrap().seq, 7);
    assert_eq!(log.get("o-50").unwrap().unwrap().seq, 50);
    drop(log);
    // an old, empty last segment is replaced by a preallocated one
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(segment::segment_name(0)), b"").unwrap();
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.records, 0);
    log.append_blocking(rec(0, "e")).unwrap();
    drop(log);
    let seg0 = dir.path().join(segment::segment_name(0));
    assert_eq!(fs::metadata(&seg0).unwrap().len(), DEFAULT_SEGMENT_BYTES);
    assert_eq!(segment::list_segments(dir.path()).unwrap().len(), 1);
}

#[test]
fn a_stale_prepared_segment_is_discarded_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), opts());
    fill(&log, 5, "s");
    drop(log);
    // a preparation cut short by a crash
    let prepared = dir.path().join(segment::PREPARED_FILE);
    fs::write(&prepared, [0u8, 0, 7, 0]).unwrap();
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.records, 5);
    assert!(!prepared.exists());
    fill(&log, 5, "t");
    let key = log.public_key();
    drop(log);
    assert!(verify(dir.path(), &key).is_ok());
}

/// A fault hook that fails every segment preparation after the first
/// `allow` ones, with the error a full disk gives.
fn failing_preparation(allow: usize) -> (FaultHook, Arc<std::sync::atomic::AtomicUsize>) {
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    let hook: FaultHook = Arc::new(move |p| {
        if p == FaultPoint::SegmentPrepare && count.fetch_add(1, Ordering::SeqCst) >= allow {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    });
    (hook, n)
}

#[test]
fn a_failed_preparation_fails_the_roll_closed_and_keeps_the_current_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, attempts) = failing_preparation(1); // the first segment only
    let o = LogOptions {
        segment_bytes: 8 << 10,
        fault: Some(hook),
        ..opts()
    };
    let (log, _) = open(dir.path(), o);
    let mut acked = Vec::new();
    let mut failed = None;
    for i in 0..200 {
        match log.append_blocking(rec(i, "d")) {
            Ok(a) => acked.push(a.seq),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    // the background preparation and then the roll's own attempt failed
    let err = failed.expect("the log must fail once it cannot roll");
    assert!(matches!(err, LogError::Failed(_)), "{err}");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(attempts.load(Ordering::SeqCst) >= 3);
    assert!(!log.is_healthy());
    assert!(log.append_blocking(rec(999, "d")).is_err());
    assert!(acked.len() > 5);
    drop(log);
    assert!(!dir.path().join(segment::PREPARED_FILE).exists());
    assert_eq!(segment::list_segments(dir.path()).unwrap().len(), 1);
    // nothing acknowledged is lost; the log opens, verifies and goes on
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.records, acked.len() as u64);
    assert_eq!(rep.truncated_tail_bytes, 0);
    let key = log.public_key();
    fill(&log, 3, "e");
    drop(log);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, acked.len() as u64 + 3);
}

#[test]
fn a_failed_background_preparation_is_redone_at_the_roll() {
    let dir = tempfile::tempdir().unwrap();
    // the first segment, then one failure (the background preparation of
    // the second), then success
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = n.clone();
    let hook: FaultHook = Arc::new(move |p| {
        if p == FaultPoint::SegmentPrepare && count.fetch_add(1, Ordering::SeqCst) == 1 {
            Err(std::io::Error::from_raw_os_error(28))
        } else {
            Ok(())
        }
    });
    let o = LogOptions {
        segment_bytes: 8 << 10,
        fault: Some(hook),
        ..opts()
    };
    let (log, _) = open(dir.path(), o);
    for i in 0..100 {
        log.append_blocking(rec(i, "b")).unwrap();
    }
    assert!(log.is_healthy());
    assert!(n.load(Ordering::SeqCst) >= 3);
    let key = log.public_key();
    drop(log);
    assert!(segment::list_segments(dir.path()).unwrap().len() >= 3);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 100);
}

#[test]
fn a_failed_first_preparation_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, _) = failing_preparation(0);
    let err = Log::open(
        dir.path(),
        LogOptions {
            fault: Some(hook),
            ..opts()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(segment::list_segments(dir.path()).unwrap().is_empty());
    assert!(!dir.path().join(segment::PREPARED_FILE).exists());
}

#[test]
fn mid_file_corruption_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), opts());
    fill(&log, 10, "m");
    drop(log);
    let fr = frames(dir.path());
    let (path, off, _) = &fr[4];
    let mut b = fs::read(path).unwrap();
    b[off + 20] ^= 0x01;
    fs::write(path, &b).unwrap();
    let err = Log::open(dir.path(), opts()).unwrap_err();
    match err {
        LogError::Corrupt {
            index,
            offset,
            ref segment,
            ..
        } => {
            assert_eq!(index, 4);
            assert_eq!(offset, *off as u64);
            assert_eq!(segment, path);
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("record 4"), "{err}");
    // the file was not modified by the failed open
    assert_eq!(fs::read(path).unwrap(), b);
}

#[test]
fn truncation_behind_checkpoint_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), opts());
    fill(&log, 10, "c");
    drop(log); // final checkpoint covers 10
    let fr = frames(dir.path());
    let (path, off, _) = &fr[7];
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(*off as u64 + 3).unwrap();
    drop(f);
    let err = Log::open(dir.path(), opts()).unwrap_err();
    assert!(matches!(err, LogError::Unverified { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("has 7 records") && msg.contains("covers 10"),
        "{msg}"
    );
}

#[test]
fn node_mismatch_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), opts());
    fill(&log, 1, "n");
    drop(log);
    let err = Log::open(
        dir.path(),
        LogOptions {
            node_id: "other".into(),
            ..opts()
        },
    )
    .unwrap_err();
    assert!(matches!(err, LogError::NodeMismatch { .. }), "{err}");
}

#[test]
fn fault_injection_fails_stop_and_recovers() {
    for fail_sync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let sw = FaultSwitch::new();
        let (log, _) = open(
            dir.path(),
            LogOptions {
                fault: Some(sw.hook()),
                ..opts()
            },
        );
        let acked = fill(&log, 10, "f");
        assert_eq!(acked.len(), 10);
        if fail_sync {
            sw.fail_next_sync.store(true, Ordering::SeqCst);
        } else {
            sw.fail_next_write.store(true, Ordering::SeqCst);
        }
        let err = log.append_blocking(rec(10, "f")).unwrap_err();
        assert!(matches!(err, LogError::Failed(_)), "{err}");
        assert!(err.to_string().contains("injected fault"), "{err}");
        assert!(!log.is_healthy());
        let reason = match log.health() {
            Health::Failed { reason } => reason,
            h => panic!("{h:?}"),
        };
        assert!(reason.contains("injected"));
        assert_eq!(log.failure(), Some(reason.clone()));
        // later appends fail immediately, even though the switch is off now
        for i in 11..15 {
            assert!(matches!(
                log.append_blocking(rec(i, "f")),
                Err(LogError::Failed(_))
            ));
        }
        assert!(log.force_checkpoint().is_err());
        assert!(log.shutdown().is_err());
        drop(log);
        let (log, rep) = open(dir.path(), opts());
        // everything acknowledged is there; the failed record may or may not be
        let expect = if fail_sync { 11 } else { 10 };
        assert_eq!(rep.records, expect);
        for i in 0..10 {
            assert_eq!(log.get(&format!("f-{i}")).unwrap().unwrap().seq, i);
        }
        assert!(log.is_healthy());
        log.append_blocking(rec(100, "g")).unwrap();
        let key = log.public_key();
        drop(log);
        let v = verify(dir.path(), &key);
        assert!(v.is_ok(), "{v:?}");
    }
}

#[test]
fn failed_checkpoint_sync_fails_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let fail: FaultHook = Arc::new(|p| {
        if p == FaultPoint::CheckpointSync {
            Err(std::io::Error::other("disk on fire"))
        } else {
            Ok(())
        }
    });
    let (log, _) = open(
        dir.path(),
        LogOptions {
            fault: Some(fail),
            ..opts()
        },
    );
    log.append_blocking(rec(0, "k")).unwrap();
    assert!(log.force_checkpoint().is_err());
    assert!(!log.is_healthy());
    assert!(log.append_blocking(rec(1, "k")).is_err());
}

#[test]
fn checkpoint_every_records() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(
        dir.path(),
        LogOptions {
            checkpoint_every_records: 10,
            ..opts()
        },
    );
    for i in 0..35 {
        log.append_blocking(rec(i, "e")).unwrap();
    }
    // Every 10 records: at 30, and not at 35.
    let latest = wait_for("a checkpoint covers 30 records", PATIENCE, || {
        log.latest_checkpoint().filter(|c| c.tree_size >= 30)
    });
    assert_eq!(latest.tree_size, 30);
}

#[test]
fn async_durability_and_segment_rolling() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        durability: Durability::Async,
        segment_bytes: 4096,
        ..opts()
    };
    let (log, _) = open(dir.path(), o.clone());
    fill(&log, 200, "s");
    let key = log.public_key();
    let b = log.prove("s-150").unwrap();
    check_proof(&b, Some(&key)).unwrap();
    assert_eq!(log.get("s-3").unwrap().unwrap().seq, 3);
    assert_eq!(log.get("s-199").unwrap().unwrap().seq, 199);
    drop(log);
    let segs = segment::list_segments(dir.path()).unwrap();
    assert!(segs.len() > 10, "{}", segs.len());
    for (first, path) in &segs {
        assert!(fs::metadata(path).unwrap().len() <= 4096);
        let buf = fs::read(path).unwrap();
        if let Some(Scan::Frame { payload, .. }) = FrameIter::new(&buf).next() {
            assert_eq!(
                DecisionRecord::from_canonical_bytes(payload).unwrap().seq,
                *first
            );
        }
    }
    let (log, rep) = open(dir.path(), o);
    assert_eq!(rep.records, 200);
    assert_eq!(log.get("s-77").unwrap().unwrap().seq, 77);
    fill(&log, 5, "t");
    drop(log);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 205);
    // deleting a whole middle segment is reported as missing records
    let segs = segment::list_segments(dir.path()).unwrap();
    fs::remove_file(&segs[3].1).unwrap();
    let v = verify(dir.path(), &key);
    let p = v.problem.unwrap();
    assert_eq!(
        (p.index, p.kind),
        (Some(segs[3].0), ProblemKind::Missing),
        "{}",
        p.detail
    );
}

#[test]
fn timestamps_are_clamped_monotonic() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), opts());
    let mut r = rec(0, "ts");
    r.ts_us = 2_000;
    log.append_blocking(r).unwrap();
    let mut r = rec(1, "ts");
    r.ts_us = 1_000;
    log.append_blocking(r).unwrap();
    let mut r = rec(2, "ts");
    r.ts_us = 0; // now
    log.append_blocking(r).unwrap();
    assert_eq!(log.get("ts-1").unwrap().unwrap().ts_us, 2_000);
    assert!(log.get("ts-2").unwrap().unwrap().ts_us > 1_600_000_000_000_000);
}

fn rewrite_checkpoints(dir: &Path, f: impl Fn(usize, &mut Checkpoint)) {
    let path = dir.join(CHECKPOINTS_FILE);
    let buf = fs::read(&path).unwrap();
    let mut out = Vec::new();
    for (i, s) in FrameIter::new(&buf).enumerate() {
        let Scan::Frame { payload, .. } = s else {
            panic!()
        };
        let mut cp = Checkpoint::from_json(payload).unwrap();
        f(i, &mut cp);
        segment::encode_frame(&cp.to_canonical_json(), &mut out);
    }
    fs::write(&path, out).unwrap();
}

#[test]
fn checkpoint_tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), opts());
    fill(&log, 10, "x");
    log.force_checkpoint().unwrap();
    fill(&log, 10, "y");
    let key = log.public_key();
    drop(log);
    let orig = fs::read(dir.path().join(CHECKPOINTS_FILE)).unwrap();
    // signature over changed content
    rewrite_checkpoints(dir.path(), |i, cp| {
        if i == 0 {
            cp.tree_size = 9;
        }
    });
    let p = verify(dir.path(), &key).problem.unwrap();
    assert_eq!(p.kind, ProblemKind::BadSignature, "{}", p.detail);
    // the wrong key
    fs::write(dir.path().join(CHECKPOINTS_FILE), &orig).unwrap();
    let other = KeyPair::from_seed(&[1; 32]).public_key();
    assert_eq!(
        verify(dir.path(), &other).problem.unwrap().kind,
        ProblemKind::BadSignature
    );
    // a validly signed checkpoint with a different root: fork
    let kp = KeyPair::from_seed(&[2; 32]);
    rewrite_checkpoints(dir.path(), |i, cp| {
        if i == 0 {
            *cp = Checkpoint::sign(&cp.node_id, cp.tree_size, &[5; 32], cp.ts_us, &kp).unwrap();
        } else {
            *cp = Checkpoint::sign(
                &cp.node_id,
                cp.tree_size,
                &cp.root().unwrap(),
                cp.ts_us,
                &kp,
            )
            .unwrap();
        }
    });
    let p = verify(dir.path(), &kp.public_key()).problem.unwrap();
    assert_eq!(p.kind, ProblemKind::Fork, "{}", p.detail);
    // a byte flip inside checkpoints.log is caught by its checksum
    let mut b = orig.clone();
    b[20] ^= 1;
    fs::write(dir.path().join(CHECKPOINTS_FILE), &b).unwrap();
    assert_eq!(
        verify(dir.path(), &key).problem.unwrap().kind,
        ProblemKind::Modified
    );
    fs::write(dir.path().join(CHECKPOINTS_FILE), &orig).unwrap();
    assert!(verify(dir.path(), &key).is_ok());
}

#[test]
fn non_canonical_record_with_valid_crc_is_modified() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), opts());
    fill(&log, 5, "nc");
    let key = log.public_key();
    drop(log);
    let fr = frames(dir.path());
    let (path, _, _) = &fr[0];
    let buf = fs::read(path).unwrap();
    let mut out = Vec::new();
    for (i, s) in FrameIter::new(&buf).enumerate() {
        let Scan::Frame { payload, .. } = s else {
            panic!()
        };
        if i == 2 {
            // same content, pretty-printed: decodes fine, not canonical
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            segment::encode_frame(&serde_json::to_vec_pretty(&v).unwrap(), &mut out);
        } else if i == 3 {
            // canonical but changed content, CRC recomputed: checkpoint root catches it
            let mut r = DecisionRecord::from_canonical_bytes(payload).unwrap();
            r.outcome = Outcome::Allow;
            r.reason_user = "sure".into();
            segment::encode_frame(&r.canonical_bytes().unwrap(), &mut out);
        } else {
            segment::encode_frame(payload, &mut out);
        }
    }
    fs::write(path, &out).unwrap();
    let p = verify(dir.path(), &key).problem.unwrap();
    assert_eq!(
        (p.index, p.kind),
        (Some(2), ProblemKind::Modified),
        "{}",
        p.detail
    );
    assert!(p.detail.contains("not canonical"), "{}", p.detail);
    // fix record 2, keep the forged record 3
    let mut fixed = Vec::new();
    for (i, s) in FrameIter::new(&out).enumerate() {
        let Scan::Frame { payload, .. } = s else {
            panic!()
        };
        if i == 2 {
            let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
            segment::encode_frame(&canonical_json(&v).unwrap(), &mut fixed);
        } else {
            segment::encode_frame(payload, &mut fixed);
        }
    }
    fs::write(path, &fixed).unwrap();
    let p = verify(dir.path(), &key).problem.unwrap();
    assert_eq!(p.kind, ProblemKind::Fork, "{}", p.detail);
}

#[derive(Debug, Clone)]
enum Tamper {
    /// Flip one byte at (frame, byte offset within the frame).
    Flip(usize, usize, u8),
    /// Delete a frame.
    Delete(usize),
    /// Swap a frame with the next one.
    Swap(usize),
    /// Cut the segment inside or at the start of a frame.
    Truncate(usize, usize),
}

fn tamper_strategy() -> impl Strategy<Value = (u64, Tamper, bool)> {
    let t = prop_oneof![
        (any::<usize>(), any::<usize>(), 1u8..=255).prop_map(|(a, b, x)| Tamper::Flip(a, b, x)),
        any::<usize>().prop_map(Tamper::Delete),
        any::<usize>().prop_map(Tamper::Swap),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Tamper::Truncate(a, b)),
    ];
    (3u64..40, t, any::<bool>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn tampering_is_detected_at_the_right_index((n, tamper, small_segments) in tamper_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let o = LogOptions {
            checkpoint_every_records: 7,
            segment_bytes: if small_segments { 2048 } else { 1 << 20 },
            ..opts()
        };
        let (log, _) = open(dir.path(), o);
        fill(&log, n, "p");
        let key = log.public_key();
        drop(log); // final checkpoint covers all n records
        prop_assert!(verify(dir.path(), &key).is_ok());
        let fr = frames(dir.path());
        prop_assert_eq!(fr.len() as u64, n);
        let nf = fr.len();
        let last_segment = segment::list_segments(dir.path()).unwrap().last().unwrap().1.clone();
        let (want_index, kinds): (u64, Vec<ProblemKind>) = match tamper {
            Tamper::Flip(i, b, x) => {
                let i = i % nf;
                let (path, off, len) = &fr[i];
                let b = b % len;
                let mut buf = fs::read(path).unwrap();
                buf[off + b] ^= x;
                fs::write(path, &buf).unwrap();
                if b >= segment::HEADER_LEN {
                    (i as u64, vec![ProblemKind::Modified])
                } else {
                    (i as u64, vec![ProblemKind::Modified, ProblemKind::BadFraming, ProblemKind::Truncated])
                }
            }
            Tamper::Delete(i) => {
                let i = i % nf;
                let (path, off, len) = &fr[i];
                let mut buf = fs::read(path).unwrap();
                buf.drain(*off..off + len);
                fs::write(path, &buf).unwrap();
                if i + 1 == nf {
                    (i as u64, vec![ProblemKind::Truncated])
                } else {
                    (i as u64, vec![ProblemKind::Missing])
                }
            }
            Tamper::Swap(i) => {
                // pick a pair of adjacent frames in the same segment
                let pairs: Vec<usize> = (0..nf - 1).filter(|&j| fr[j].0 == fr[j + 1].0).collect();
                if pairs.is_empty() {
                    return Ok(());
                }
                let i = pairs[i % pairs.len()];
                let (path, a_off, a_len) = &fr[i];
                let (_, b_off, b_len) = &fr[i + 1];
                let mut buf = fs::read(path).unwrap();
                let a = buf[*a_off..a_off + a_len].to_vec();
                let b = buf[*b_off..b_off + b_len].to_vec();
                let mut swapped = b;
                swapped.extend_from_slice(&a);
                buf.splice(*a_off..b_off + b_len, swapped);
                fs::write(path, &buf).unwrap();
                (i as u64, vec![ProblemKind::Reordered])
            }
            Tamper::Truncate(i, b) => {
                let i = i % nf;
                let (path, off, len) = &fr[i];
                let cut = off + b % len;
                let f = fs::OpenOptions::new().write(true).open(path).unwrap();
                f.set_len(cut as u64).unwrap();
                drop(f);
                // later segments are gone too
                for (p, _, _) in &fr[i + 1..] {
                    if p != path {
                        let _ = fs::remove_file(p);
                    }
                }
                (i as u64, vec![ProblemKind::Truncated])
            }
        };
        let rep = verify(dir.path(), &key);
        let p = rep.problem.clone().unwrap();
        prop_assert_eq!(p.index, Some(want_index), "{:?} {:?}", tamper, p);
        prop_assert!(kinds.contains(&p.kind), "{:?} {:?}", tamper, p);
        // Open refuses damage in what it reads (the unsealed tail) instead of
        // silently repairing it. A sealed segment is not read at open: there the log
        // may open, but it never signs over the damage (its tree comes from the tiles),
        // so verify still finds it after more records.
        let sealed = fr[want_index as usize].0 != last_segment && !matches!(tamper, Tamper::Truncate(..));
        match Log::open(dir.path(), opts()) {
            Err(_) => {}
            Ok((log, _)) => {
                prop_assert!(sealed, "open accepted damage in the unsealed tail: {:?}", tamper);
                fill(&log, 3, "after");
                drop(log);
                let again = verify(dir.path(), &key).problem.unwrap();
                prop_assert_eq!(again.index, Some(want_index), "{:?} {:?}", tamper, again);
            }
        }
    }
}

// --- Evidence that can be rewritten (issue 14, part 3) ---

/// Rewrites record `index` through `f` and re-frames it with a fresh CRC, as
/// someone editing the files would; the segment keeps its size (zero tail).
fn rewrite_record(dir: &Path, index: usize, f: impl Fn(&mut DecisionRecord)) {
    let (path, _, _) = frames(dir)[index].clone();
    let buf = fs::read(&path).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    for (_, p) in segment::list_segments(dir).unwrap() {
        if p != path {
            i += frames(dir).iter().filter(|f| f.0 == p).count();
            continue;
        }
        for s in FrameIter::new(&buf) {
            let Scan::Frame { payload, .. } = s else {
                break;
            };
            if i == index {
                let mut r = DecisionRecord::from_canonical_bytes(payload).unwrap();
                f(&mut r);
                let mut bytes = Vec::new();
                r.write_canonical(&mut bytes).unwrap();
                segment::encode_frame(&bytes, &mut out);
            } else {
                segment::encode_frame(payload, &mut out);
            }
            i += 1;
        }
    }
    assert!(out.len() <= buf.len());
    out.resize(buf.len(), 0);
    fs::write(&path, out).unwrap();
}

/// 30 decisions, every one checkpointed (the shutdown checkpoint).
fn thirty(dir: &Path) -> PublicKey {
    let (log, _) = open(dir, opts());
    fill(&log, 10, "r");
    log.force_checkpoint().unwrap();
    for i in 10..30 {
        log.append_blocking(rec(i, "r")).unwrap();
    }
    log.force_checkpoint().unwrap();
    let key = log.public_key();
    drop(log);
    key
}

fn deny_to_allow(dir: &Path) {
    rewrite_record(dir, 1, |r| {
        assert_eq!(r.outcome, Outcome::Deny);
        r.outcome = Outcome::Allow;
    });
}

fn refused(dir: &Path, o: LogOptions, what: &str) -> String {
    match Log::open(dir, o) {
        Err(e @ LogError::Unverified { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("arbiter log verify"), "{msg}");
            assert!(msg.contains("--accept-log-damage"), "{msg}");
            assert!(msg.contains(what), "{msg}");
            msg
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a log with {what} was opened"),
    }
}

fn verify_problem(dir: &Path, key: &PublicKey) -> Problem {
    let rep = verify(dir, key);
    match rep.problem {
        Some(p) => p,
        None => panic!("verify passed: {} records", rep.records),
    }
}

#[test]
fn rewritten_record_with_checkpoints_deleted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    deny_to_allow(dir.path());
    fs::remove_file(dir.path().join(CHECKPOINTS_FILE)).unwrap();
    let p = verify_problem(dir.path(), &key);
    assert_eq!(p.kind, ProblemKind::Truncated, "{}", p.detail);
    let rep = verify(dir.path(), &key);
    assert!(
        !rep.signatures_checked,
        "no checkpoint, no signature checked"
    );
    refused(dir.path(), opts(), "checkpoints.log` holds 0 checkpoints");
    // Refusing changed nothing: still refused, and no checkpoint was signed.
    refused(dir.path(), opts(), "holds 0 checkpoints");
    assert!(
        !dir.path().join(CHECKPOINTS_FILE).exists()
            || fs::read(dir.path().join(CHECKPOINTS_FILE))
                .unwrap()
                .is_empty()
    );
}

#[test]
fn rewritten_record_with_checkpoints_emptied_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    deny_to_allow(dir.path());
    fs::write(dir.path().join(CHECKPOINTS_FILE), b"").unwrap();
    assert_eq!(
        verify_problem(dir.path(), &key).kind,
        ProblemKind::Truncated
    );
    refused(dir.path(), opts(), "holds 0 checkpoints");
}

#[test]
fn checkpoints_and_their_state_deleted_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    deny_to_allow(dir.path());
    fs::remove_file(dir.path().join(CHECKPOINTS_FILE)).unwrap();
    fs::remove_file(dir.path().join(state::STATE_FILE)).unwrap();
    assert_eq!(
        verify_problem(dir.path(), &key).kind,
        ProblemKind::Uncovered
    );
    refused(dir.path(), opts(), "checkpoints.state` is missing");
}

#[test]
fn damaged_checkpoint_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    fs::write(dir.path().join(state::STATE_FILE), [0u8; 128]).unwrap();
    assert_eq!(
        verify_problem(dir.path(), &key).kind,
        ProblemKind::Uncovered
    );
    refused(dir.path(), opts(), "is damaged");
}

/// A log written before `checkpoints.state` existed: every checkpoint is
/// still checked, and the state is created from them.
#[test]
fn log_without_a_state_file_opens_when_its_checkpoints_verify() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    fs::remove_file(dir.path().join(state::STATE_FILE)).unwrap();
    assert!(verify(dir.path(), &key).is_ok());
    let (log, rep) = open(dir.path(), opts());
    assert!(rep.created_state);
    drop(log);
    let (_, rep) = open(dir.path(), opts());
    assert!(!rep.created_state);
    // Without the state, an altered record is still caught by the checkpoints.
    fs::remove_file(dir.path().join(state::STATE_FILE)).unwrap();
    deny_to_allow(dir.path());
    refused(dir.path(), opts(), "checkpoint #0");
}

#[test]
fn truncated_checkpoint_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    let path = dir.path().join(CHECKPOINTS_FILE);
    let orig = fs::read(&path).unwrap();
    let ends: Vec<usize> = {
        let mut v = Vec::new();
        let mut it = FrameIter::new(&orig);
        for s in it.by_ref() {
            let Scan::Frame { offset, payload } = s else {
                panic!()
            };
            v.push(offset + segment::HEADER_LEN + payload.len());
        }
        v
    };
    assert!(ends.len() >= 2, "{ends:?}");
    // Whole checkpoints cut off: the earlier ones still verify.
    fs::write(&path, &orig[..ends[0]]).unwrap();
    assert_eq!(
        verify_problem(dir.path(), &key).kind,
        ProblemKind::Truncated
    );
    refused(dir.path(), opts(), "holds 1 checkpoints");
    // Cut inside the last frame: it looks torn, but the writer had synced it.
    fs::write(&path, &orig[..orig.len() - 5]).unwrap();
    refused(
        dir.path(),
        opts(),
        "checkpoints, but the writer had written",
    );
    // The refused open did not cut the file.
    assert_eq!(fs::read(&path).unwrap().len(), orig.len() - 5);
    fs::write(&path, &orig).unwrap();
    assert!(verify(dir.path(), &key).is_ok());
    Log::open(dir.path(), opts()).unwrap();
}

#[test]
fn edited_older_checkpoint_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    let orig = fs::read(dir.path().join(CHECKPOINTS_FILE)).unwrap();
    // The first checkpoint claims another size: its signature fails.
    rewrite_checkpoints(dir.path(), |i, cp| {
        if i == 0 {
            cp.tree_size = 9;
        }
    });
    assert_eq!(
        verify_problem(dir.path(), &key).kind,
        ProblemKind::BadSignature
    );
    refused(dir.path(), opts(), "checkpoint #0");
    // Another root for the first checkpoint.
    fs::write(dir.path().join(CHECKPOINTS_FILE), &orig).unwrap();
    rewrite_checkpoints(dir.path(), |i, cp| {
        if i == 0 {
            cp.root_hash = hex_of(&[7; 32]);
        }
    });
    refused(dir.path(), opts(), "checkpoint #0");
    // Its time after the next one's.
    fs::write(dir.path().join(CHECKPOINTS_FILE), &orig).unwrap();
    rewrite_checkpoints(dir.path(), |i, cp| {
        if i == 0 {
            cp.ts_us = i64::MAX / 2;
        }
    });
    refused(dir.path(), opts(), "checkpoint #");
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn checkpoint_signed_with_another_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    let orig = fs::read(dir.path().join(CHECKPOINTS_FILE)).unwrap();
    let other = KeyPair::from_seed(&[9; 32]);
    let resign = |only_first: bool| {
        rewrite_checkpoints(dir.path(), |i, cp| {
            if !only_first || i == 0 {
                *cp = Checkpoint::sign(
                    &cp.node_id,
                    cp.tree_size,
                    &cp.root().unwrap(),
                    cp.ts_us,
                    &other,
                )
                .unwrap();
            }
        });
    };
    // An older checkpoint only (the latest still verifies).
    resign(true);
    assert_eq!(
        verify_problem(dir.path(), &key).kind,
        ProblemKind::BadSignature
    );
    refused(dir.path(), opts(), "checkpoint #0");
    // All of them.
    fs::write(dir.path().join(CHECKPOINTS_FILE), &orig).unwrap();
    resign(false);
    refused(dir.path(), opts(), "does not verify under the log's key");
}

/// A hook that fails every checkpoint write once `armed`: the log then ends
/// as after a crash between appending records and checkpointing them.
fn crash_before_checkpoints() -> (FaultHook, Arc<std::sync::atomic::AtomicBool>) {
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a = armed.clone();
    let hook: FaultHook = Arc::new(move |p| {
        if p == FaultPoint::CheckpointWrite && a.load(Ordering::SeqCst) {
            Err(std::io::Error::other("simulated crash"))
        } else {
            Ok(())
        }
    });
    (hook, armed)
}

#[test]
fn records_beyond_the_window_uncovered_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, armed) = crash_before_checkpoints();
    let (log, _) = open(
        dir.path(),
        LogOptions {
            fault: Some(hook),
            ..opts()
        },
    );
    fill(&log, 3, "w");
    log.force_checkpoint().unwrap();
    armed.store(true, Ordering::SeqCst);
    for i in 3..20 {
        log.append_blocking(rec(i, "w")).unwrap();
    }
    let key = log.public_key();
    drop(log); // the shutdown checkpoint fails: 17 records uncovered
    let small = || LogOptions {
        checkpoint_every_records: 5,
        ..opts()
    };
    refused(
        dir.path(),
        small(),
        "records 3 to 19 (17) are covered by no checkpoint",
    );
    let rep = verify_dir_with(dir.path(), Some(&key), None, &VerifyOptions { window: 5 }).unwrap();
    let p = rep.problem.unwrap();
    assert_eq!(p.kind, ProblemKind::Uncovered, "{}", p.detail);
    assert_eq!(p.index, Some(3));
    // Within the window (the default 1000): the crash tail is legitimate,
    // verifies, and is signed on open.
    assert!(verify(dir.path(), &key).is_ok());
    let (log, rep) = open(dir.path(), opts());
    assert_eq!(rep.records, 20);
    assert_eq!(log.latest_checkpoint().unwrap().tree_size, 20);
    drop(log);
    let rep = verify_dir_with(dir.path(), Some(&key), None, &VerifyOptions { window: 0 }).unwrap();
    assert!(rep.is_ok(), "{rep:?}");
}

#[test]
fn writer_never_leaves_more_than_the_window_unsigned() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        checkpoint_every_records: 7,
        ..opts()
    };
    let (log, _) = open(dir.path(), o.clone());
    // One big batch of concurrent appends.
    fill(&log, 100, "b");
    let key = log.public_key();
    let cps = read_checkpoints(dir.path()).unwrap();
    let mut prev = 0;
    for cp in &cps {
        assert!(cp.tree_size - prev <= 7, "{prev} -> {}", cp.tree_size);
        prev = cp.tree_size;
    }
    assert!(100 - prev <= 7);
    drop(log);
    let rep = verify_dir_with(dir.path(), Some(&key), None, &VerifyOptions { window: 7 }).unwrap();
    assert!(rep.is_ok(), "{rep:?}");
}

#[test]
fn accepted_damage_is_recorded_and_reported_by_verify() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    deny_to_allow(dir.path());
    fs::remove_file(dir.path().join(CHECKPOINTS_FILE)).unwrap();
    refused(dir.path(), opts(), "holds 0 checkpoints");
    // A reason is required.
    let err = Log::open(
        dir.path(),
        LogOptions {
            accept_damage: Some("  ".into()),
            ..opts()
        },
    )
    .unwrap_err();
    assert!(matches!(err, LogError::Invalid(_)), "{err}");
    let (log, rep) = open(
        dir.path(),
        LogOptions {
            accept_damage: Some("restored from the 02:00 backup".into()),
            ..opts()
        },
    );
    let problem = rep.accepted_damage.clone().unwrap();
    assert!(problem.contains("holds 0 checkpoints"), "{problem}");
    assert_eq!(rep.records, 30);
    // The override is the next record, signed right away.
    assert_eq!(log.tree_size(), 31);
    assert_eq!(log.latest_checkpoint().unwrap().tree_size, 31);
    let r = log.get_index(30).unwrap().unwrap();
    assert_eq!(r.action, OVERRIDE_ACTION);
    assert_eq!(r.enforcement_point, OVERRIDE_ENFORCEMENT_POINT);
    assert_eq!(r.context["reason"], "restored from the 02:00 backup");
    assert!(r.reason_admin.contains("holds 0 checkpoints"));
    log.append_blocking(rec(31, "r")).unwrap();
    drop(log);
    // verify reports it, and the log opens normally again.
    let rep = verify(dir.path(), &key);
    assert!(rep.is_ok(), "{rep:?}");
    assert_eq!(rep.overrides.len(), 1, "{rep:?}");
    assert_eq!(rep.overrides[0].index, 30);
    assert_eq!(rep.overrides[0].reason, "restored from the 02:00 backup");
    assert!(rep.overrides[0].problem.contains("holds 0 checkpoints"));
    assert_eq!(
        verify_dir_reference_overrides(dir.path(), &key),
        rep.overrides
    );
    let (log, rep) = open(dir.path(), opts());
    assert!(rep.accepted_damage.is_none());
    assert_eq!(log.tree_size(), 32);
    drop(log);
    // A damaged checkpoint file is kept, set aside, as evidence.
    let aside = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("checkpoints.log.damaged-")
        })
        .count();
    assert_eq!(aside, 0, "nothing to set aside: the file was deleted");
}

#[test]
fn accepted_damage_sets_the_bad_checkpoints_aside() {
    let dir = tempfile::tempdir().unwrap();
    let key = thirty(dir.path());
    rewrite_checkpoints(dir.path(), |i, cp| {
        if i == 0 {
            cp.tree_size = 9;
        }
    });
    let bad = fs::read(dir.path().join(CHECKPOINTS_FILE)).unwrap();
    let (log, rep) = open(
        dir.path(),
        LogOptions {
            accept_damage: Some("investigated in INC-42".into()),
            ..opts()
        },
    );
    drop(log);
    let aside = rep.set_aside.unwrap();
    assert_eq!(fs::read(&aside).unwrap(), bad);
    let rep = verify(dir.path(), &key);
    assert!(rep.is_ok(), "{rep:?}");
    assert_eq!(rep.overrides.len(), 1);
    assert!(
        rep.overrides[0].problem.contains("checkpoint #0"),
        "{rep:?}"
    );
}

/// A record whose context merely mentions the override marker is not one.
#[test]
fn a_record_cannot_pose_as_an_override() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), opts());
    let mut r = rec(0, "fake");
    r.context = json!({"enforcement_point": OVERRIDE_ENFORCEMENT_POINT, "action": OVERRIDE_ACTION});
    r.context_digest = context_digest(&r.context).unwrap();
    log.append_blocking(r).unwrap();
    let key = log.public_key();
    drop(log);
    let rep = verify(dir.path(), &key);
    assert!(rep.is_ok() && rep.overrides.is_empty(), "{rep:?}");
}

fn verify_dir_reference_overrides(dir: &Path, key: &PublicKey) -> Vec<Override> {
    arbiter_log::verify::verify_dir_reference(dir, Some(key), None)
        .unwrap()
        .overrides
}

#[test]
fn idle_heartbeat_does_not_grow_the_checkpoint_file() {
    let dir = tempfile::tempdir().unwrap();
    let liveness = Duration::from_millis(400);
    let (log, _) = open(
        dir.path(),
        LogOptions {
            checkpoint_every: Duration::from_millis(10),
            liveness_every: liveness,
            ..opts()
        },
    );
    // A new log gets its first checkpoint within the interval.
    wait_for("the first checkpoint is written", PATIENCE, || {
        (!read_checkpoints(dir.path()).unwrap().is_empty()).then_some(())
    });
    log.append_blocking(rec(0, "h")).unwrap();
    // A checkpoint follows growth within the interval...
    let n = wait_for("a checkpoint follows the append", PATIENCE, || {
        let cps = read_checkpoints(dir.path()).unwrap();
        cps.iter().position(|c| c.tree_size == 1)
    });
    // ...and then, idle, the next one is the liveness checkpoint, no sooner
    // than the liveness interval (the old heartbeat wrote one every 10 ms).
    let cps = wait_for("a liveness checkpoint is written", PATIENCE, || {
        let cps = read_checkpoints(dir.path()).unwrap();
        (cps.len() > n + 1).then_some(cps)
    });
    let (grown, next) = (&cps[n], &cps[n + 1]);
    assert_eq!(next.tree_size, 1);
    assert!(
        next.ts_us - grown.ts_us >= liveness.as_micros() as i64,
        "idle checkpoint after {} us",
        next.ts_us - grown.ts_us
    );
    // The same before the first record: size 0 was checkpointed once only.
    let zeros: Vec<_> = cps.iter().filter(|c| c.tree_size == 0).collect();
    for w in zeros.windows(2) {
        assert!(w[1].ts_us - w[0].ts_us >= liveness.as_micros() as i64);
    }
    drop(log);
}

// --- Bounded memory: tiles and sealed segments (issue 17, part 1) ---

/// A UUIDv7-shaped decision id whose time advances one millisecond every 50 records.
fn uuid7(i: u64) -> String {
    let ms = 1_700_000_000_000 + i / 50;
    format!("{:08x}-{:04x}-7000-8000-{:012x}", ms >> 16, ms & 0xffff, i)
}

fn fill_ids(log: &Log, range: std::ops::Range<u64>, id: impl Fn(u64) -> String) {
    let tickets: Vec<_> = range
        .map(|i| {
            let mut r = rec(i, "m");
            r.decision_id = id(i);
            log.append_ticket(r)
        })
        .collect();
    for t in tickets {
        t.wait().unwrap();
    }
}

fn check_found(log: &Log, key: &PublicKey, id: &str, seq: u64) {
    let r = log
        .get(id)
        .unwrap()
        .unwrap_or_else(|| panic!("{id} not found"));
    assert_eq!((r.seq, r.decision_id.as_str()), (seq, id));
    let proof = log.prove(id).unwrap();
    assert_eq!(proof.leaf_index, seq);
    check_proof(&proof, Some(key)).unwrap();
}

#[test]
fn memory_stays_bounded_as_the_log_grows() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 1 << 20,
        durability: Durability::Async,
        checkpoint_every_records: 20_000,
        compress_sealed: true,
        ..opts()
    };
    let (log, _) = open(dir.path(), o.clone());
    let key = log.public_key();
    fill_ids(&log, 0..50_000, uuid7);
    let early = log.memory();
    for from in (50_000..200_000).step_by(50_000) {
        fill_ids(&log, from..from + 50_000, uuid7);
    }
    // Sealing runs behind the writer: wait for it to catch up.
    arbiter_testkit::wait_until("sealing to catch up", PATIENCE, || {
        log.memory().open_segments <= 2
    });
    let late = log.memory();
    assert!(early.sealed_segments >= 10, "{early:?}");
    assert!(
        late.sealed_segments >= 4 * early.sealed_segments - 8,
        "{late:?}"
    );
    // What the tree and indexes hold does not follow the record count: the
    // right edge and a bounded tile cache, and the segments not yet sealed.
    assert!(late.tree_bytes <= 4 << 20, "{late:?}");
    assert!(late.open_segment_bytes <= 2 << 20, "{late:?}");
    let held = |m: MemoryUse| m.tree_bytes + m.open_segment_bytes;
    assert!(held(late) <= held(early) + (1 << 20), "{early:?} {late:?}");
    // Every record is still found, read and proven: in sealed segments, in
    // the one being written, first and last.
    for i in [0, 1, 4_321, 99_999, 150_000, 199_999] {
        check_found(&log, &key, &uuid7(i), i);
    }
    assert_eq!(log.get_index(777).unwrap().unwrap().seq, 777);
    assert!(log.get(&uuid7(200_000)).unwrap().is_none());
    // Ids that are not UUIDv7 are found too (every sealed segment is searched).
    fill_ids(&log, 200_000..200_010, |i| format!("plain-{i}"));
    check_found(&log, &key, "plain-200003", 200_003);
    let segments = segment::list_segments(dir.path()).unwrap().len();
    drop(log);

    // Reopened, only the segment after the last seal is read.
    let (log, rep) = open(dir.path(), o.clone());
    assert_eq!(rep.records, 200_010);
    assert!(rep.sealed_segments + 2 >= segments, "{rep:?} of {segments}");
    for i in [3, 123_456, 199_998] {
        check_found(&log, &key, &uuid7(i), i);
    }
    check_found(&log, &key, "plain-200009", 200_009);
    fill_ids(&log, 200_010..200_020, uuid7);
    check_found(&log, &key, &uuid7(200_015), 200_015);
    drop(log);
    // A reader proves from the seals, tiles and index files too.
    for (id, seq) in [
        (uuid7(123_456), 123_456),
        (uuid7(200_015), 200_015),
        ("plain-200001".to_string(), 200_001),
    ] {
        let b = prove_dir(dir.path(), &id).unwrap();
        assert_eq!(b.leaf_index, seq);
        check_proof(&b, Some(&key)).unwrap();
    }
    assert!(matches!(
        prove_dir(dir.path(), &uuid7(300_000)),
        Err(LogError::NotFound(_))
    ));
    let cps = read_checkpoints(dir.path()).unwrap();
    let (old, new) = (&cps[1], cps.last().unwrap());
    let proof = consistency_dir(dir.path(), old, new).unwrap();
    check_consistency(old, new, &proof, &key).unwrap();
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 200_020);

    // Without `sealed.log`, open reads every segment and seals them again.
    fs::remove_file(dir.path().join(sealed::SEALED_FILE)).unwrap();
    let (log, rep) = open(dir.path(), o.clone());
    assert_eq!((rep.records, rep.sealed_segments), (200_020, 0));
    check_found(&log, &key, &uuid7(54_321), 54_321);
    drop(log);
    let (_log, rep) = open(dir.path(), o);
    assert!(rep.sealed_segments + 2 >= segments, "{rep:?}");
}

/// A closed log of `n` records with UUIDv7 ids in 64 KiB segments, compressed when sealed.
fn small_sealed_log(n: u64) -> (tempfile::TempDir, LogOptions, PublicKey) {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 64 << 10,
        compress_sealed: true,
        ..opts()
    };
    let (log, _) = open(dir.path(), o.clone());
    let key = log.public_key();
    fill_ids(&log, 0..n, uuid7);
    drop(log);
    (dir, o, key)
}

#[test]
fn a_damaged_index_or_tile_never_gives_a_wrong_answer() {
    let (dir, o, key) = small_sealed_log(1_500);
    // An index file whose offsets point at other records: the record read
    // back is checked, so the answer is an error or nothing, never another
    // record.
    let idx = sealed::index_path(dir.path(), 0);
    let mut b = fs::read(&idx).unwrap();
    let (a, c) = (48, 48 + 8 * 5);
    let (x, y) = (b[a..a + 8].to_vec(), b[c..c + 8].to_vec());
    b[a..a + 8].copy_from_slice(&y);
    b[c..c + 8].copy_from_slice(&x);
    fs::write(&idx, &b).unwrap();
    let p = verify(dir.path(), &key).problem.unwrap();
    assert_eq!(
        (p.kind, p.index),
        (ProblemKind::DamagedIndex, Some(0)),
        "{p:?}"
    );
    let (log, _) = open(dir.path(), o.clone());
    match log.get_index(0) {
        Err(LogError::Corrupt { reason, .. }) => assert!(reason.contains("index"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(!matches!(log.get(&uuid7(0)), Ok(Some(r)) if r.seq != 0));
    // Record 7's entry is intact.
    check_found(&log, &key, &uuid7(7), 7);
    drop(log);
    // A tile file replaced: proofs through it fail naming the file.
    let tile = tiles::tile_path(dir.path(), 0, 1);
    let mut t = fs::read(&tile).unwrap();
    t[0] ^= 0xff;
    fs::write(&tile, &t).unwrap();
    let (log, _) = open(dir.path(), o.clone());
    let err = log.prove(&uuid7(300)).unwrap_err().to_string();
    assert!(
        err.contains("tile") && err.contains("damaged or replaced"),
        "{err}"
    );
    check_found(&log, &key, &uuid7(1_400), 1_400);
    drop(log);
    let p = verify(dir.path(), &key).problem.unwrap();
    assert_eq!(p.kind, ProblemKind::DamagedIndex, "{p:?}");
    // What verify says to do rebuilds them from the records.
    fs::remove_file(dir.path().join(sealed::SEALED_FILE)).unwrap();
    let (log, _) = open(dir.path(), o);
    check_found(&log, &key, &uuid7(300), 300);
    assert_eq!(log.get_index(0).unwrap().unwrap().seq, 0);
    drop(log);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
}

#[test]
fn deleted_tiles_or_index_files_are_rebuilt_at_open() {
    let (dir, o, key) = small_sealed_log(2_000);
    // An operator removes the tiles: the open reads the records again.
    fs::remove_dir_all(dir.path().join(tiles::TILE_DIR)).unwrap();
    let (log, rep) = open(dir.path(), o.clone());
    assert_eq!((rep.records, rep.sealed_segments), (2_000, 0));
    check_found(&log, &key, &uuid7(10), 10);
    drop(log);
    assert!(tiles::tile_path(dir.path(), 0, 3).is_file());
    // One index file removed: that segment and the ones after it are sealed again.
    let segs = segment::list_segments(dir.path()).unwrap();
    let (first, _) = segs[2];
    fs::remove_file(sealed::index_path(dir.path(), first)).unwrap();
    let (log, rep) = open(dir.path(), o.clone());
    assert_eq!(rep.sealed_segments, 2, "{rep:?}");
    check_found(&log, &key, &uuid7(first + 1), first + 1);
    drop(log);
    assert!(sealed::index_path(dir.path(), first).is_file());
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
}

#[test]
fn a_segment_that_cannot_be_sealed_fails_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 16 << 10,
        compress_sealed: true,
        ..opts()
    };
    let (log, _) = open(dir.path(), o);
    // Where index files go is taken by a plain file.
    fs::write(dir.path().join(sealed::INDEX_DIR), b"not a directory").unwrap();
    for i in 0..200 {
        if log.append_blocking(rec(i, "s")).is_err() {
            break;
        }
    }
    arbiter_testkit::wait_until("the log to fail", PATIENCE, || !log.is_healthy());
    let reason = log.failure().unwrap();
    assert!(reason.contains("cannot seal"), "{reason}");
    assert!(matches!(
        log.append_blocking(rec(999, "s")),
        Err(LogError::Failed(_))
    ));
}

#[test]
fn sealed_segments_are_compressed_and_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let o = LogOptions {
        segment_bytes: 256 << 10,
        compress_sealed: true,
        ..opts()
    };
    let (log, _) = open(dir.path(), o.clone());
    let key = log.public_key();
    fill_ids(&log, 0..3_000, uuid7);
    arbiter_testkit::wait_until("sealing to catch up", PATIENCE, || {
        log.memory().open_segments <= 1
    });
    let want: Vec<DecisionRecord> = read_records(dir.path())
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    drop(log);
    let segs = segment::list_segments(dir.path()).unwrap();
    let compressed: Vec<&PathBuf> = segs
        .iter()
        .map(|s| &s.1)
        .filter(|p| segment::is_compressed(p))
        .collect();
    assert!(
        compressed.len() >= 3 && compressed.len() + 1 == segs.len(),
        "{segs:?}"
    );
    // A third of the bytes or less.
    let (mut z, mut plain) = (0u64, 0u64);
    for p in &compressed {
        z += fs::metadata(p).unwrap().len();
        plain += segment::read_segment(p).unwrap().len() as u64;
        let mut name = p.as_os_str().to_owned();
        name.push(".tmp");
        assert!(!Path::new(&name).exists());
    }
    assert!(z * 3 <= plain, "{z} compressed of {plain}");
    // Every reader gives the same records.
    let again: Vec<DecisionRecord> = read_records(dir.path())
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    assert_eq!(again, want);
    let mut followed = 0;
    Follower::new(dir.path())
        .poll_raw(&mut |i, _| {
            assert_eq!(i, followed);
            followed += 1;
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(followed, 3_000);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 3_000);
    check_proof(&prove_dir(dir.path(), &uuid7(5)).unwrap(), Some(&key)).unwrap();
    let (log, _) = open(dir.path(), o.clone());
    check_found(&log, &key, &uuid7(1), 1);
    check_found(&log, &key, &uuid7(2_222), 2_222);
    assert_eq!(log.get_index(1_500).unwrap().unwrap(), want[1_500]);
    drop(log);

    // A crash after a seal, before the uncompressed file was removed: open
    // removes it; a compression cut short leaves a temporary file, removed too.
    let first = segs[1].0;
    let zst = &segs[1].1;
    let plain_path = dir.path().join(segment::segment_name(first));
    let data = segment::read_segment(zst).unwrap();
    fs::write(&plain_path, &data).unwrap();
    let mut tmp = zst.as_os_str().to_owned();
    tmp.push(".tmp");
    fs::write(&tmp, b"partial").unwrap();
    let (log, _) = open(dir.path(), o.clone());
    assert!(!plain_path.exists() && !Path::new(&tmp).exists());
    check_found(&log, &key, &uuid7(first + 3), first + 3);
    drop(log);

    // Changed bytes in a compressed segment: reads fail, never give other
    // records, and verify reports the segment at its first record.
    let mut b = fs::read(zst).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x5a;
    b[mid + 1] ^= 0xa5;
    fs::write(zst, &b).unwrap();
    let p = verify(dir.path(), &key).problem.unwrap();
    assert_eq!(
        (p.kind, p.index),
        (ProblemKind::Modified, Some(first)),
        "{p:?}"
    );
    let (log, _) = open(dir.path(), o);
    for i in first..first + 400 {
        match log.get_index(i) {
            Ok(Some(r)) => assert_eq!(r, want[i as usize]),
            Ok(None) => panic!("record {i} missing"),
            Err(_) => {}
        }
    }
}

#[test]
fn archived_segments_are_read_from_their_archive() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let adir = store.path().join("2026-q1");
    let o = LogOptions {
        segment_bytes: 64 << 10,
        compress_sealed: true,
        ..opts()
    };
    let ts = |i: i64| 1_700_000_000_000_000 + i;
    let (log, _) = open(dir.path(), o.clone());
    let key = log.public_key();
    fill_ids(&log, 0..3_000, uuid7);
    // Not while the log is open.
    let err = archive::archive(dir.path(), ts(1_500), &adir).unwrap_err();
    assert!(err.to_string().contains("open in another process"), "{err}");
    drop(log);
    let r = archive::archive(dir.path(), ts(1_500), &adir).unwrap();
    assert_eq!(r.first, 0);
    assert!(r.segments >= 2 && r.end > 0 && r.end <= 1_500, "{r:?}");
    assert!(
        !dir.path()
            .join(segment::compressed_segment_name(0))
            .exists()
    );
    assert!(adir.join(segment::compressed_segment_name(0)).is_file());
    assert!(adir.join("index").is_dir() && adir.join("tile/0/000").is_file());
    // Nothing more is old enough: nothing moves.
    let again = archive::archive(dir.path(), ts(1_500), &adir).unwrap();
    assert_eq!((again.first, again.end), (r.end, r.end));

    // The log opens and reads, proves and verifies across the archive.
    let (log, _) = open(dir.path(), o.clone());
    check_found(&log, &key, &uuid7(3), 3);
    check_found(&log, &key, &uuid7(r.end - 1), r.end - 1);
    check_found(&log, &key, &uuid7(2_999), 2_999);
    assert_eq!(log.get_index(7).unwrap().unwrap().seq, 7);
    fill_ids(&log, 3_000..3_100, uuid7);
    drop(log);
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    assert_eq!(v.records, 3_100);
    check_proof(&prove_dir(dir.path(), &uuid7(5)).unwrap(), Some(&key)).unwrap();
    assert_eq!(read_records(dir.path()).unwrap().count(), 3_100);

    // The archive taken away: the log still opens and serves what it holds;
    // archived records fail naming where they went; verify says why it cannot.
    let away = store.path().join("elsewhere");
    fs::rename(&adir, &away).unwrap();
    let (log, _) = open(dir.path(), o.clone());
    assert!(log.get(&uuid7(3)).is_err());
    check_found(&log, &key, &uuid7(3_050), 3_050);
    drop(log);
    let err = verify_dir(dir.path(), Some(&key), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("archived") && err.contains("2026-q1"), "{err}");
    fs::rename(&away, &adir).unwrap();
    let v = verify(dir.path(), &key);
    assert!(v.is_ok(), "{v:?}");
    // A damaged `archived.log` is named, at open and by verify.
    let record = dir.path().join(archive::ARCHIVED_FILE);
    let good = fs::read(&record).unwrap();
    fs::write(&record, b"{\"first\": 0, \"end\": ").unwrap();
    let err = Log::open(dir.path(), o).unwrap_err().to_string();
    assert!(err.contains("archived.log"), "{err}");
    let err = verify_dir(dir.path(), Some(&key), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("archived.log"), "{err}");
    fs::write(&record, good).unwrap();
}

#[test]
fn a_reused_decision_id_finds_its_first_record_sealed_or_open() {
    let (dir, o, key) = small_sealed_log(300);
    let (log, _) = open(dir.path(), o);
    // Reused: once in a sealed segment (record 4), again in the open one.
    fill_ids(&log, 300..302, |i| {
        if i == 300 { uuid7(4) } else { "again".into() }
    });
    fill_ids(&log, 302..304, |_| "again".into());
    let r = log.get(&uuid7(4)).unwrap().unwrap();
    assert_eq!(r.seq, 4);
    check_found(&log, &key, "again", 301);
}
