//! The witness's HTTP API (`arbiter witness serve`): what it cosigns, and every refusal with
//! its status.

use std::sync::Arc;

use arbiter_log::witness::{
    AddCheckpoint, Cosignature, CosignedCheckpoint, MAX_REQUEST_BYTES, Witness,
};
use arbiter_log::{Checkpoint, KeyPair, MerkleTree};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn send(w: &Arc<Witness>, req: Request<Body>) -> Answer {
    let res = arbiter_server::witness::router(w.clone())
        .oneshot(req)
        .await
        .unwrap();
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

async fn add(w: &Arc<Witness>, body: impl Into<Body>) -> Answer {
    send(
        w,
        Request::post("/add-checkpoint")
            .header("content-type", "text/plain")
            .body(body.into())
            .unwrap(),
    )
    .await
}

fn tree(n: u64, rewrite: Option<u64>) -> MerkleTree {
    let mut t = MerkleTree::new();
    for i in 0..n {
        let data = if Some(i) == rewrite {
            "rewritten".to_owned()
        } else {
            format!("r{i}")
        };
        t.push_data(data.as_bytes());
    }
    t
}

fn checkpoint(t: &MerkleTree, size: u64, ts: i64, key: &KeyPair) -> Checkpoint {
    Checkpoint::sign("n1", size, &t.root_at(size).unwrap(), ts, key).unwrap()
}

#[tokio::test]
async fn a_witness_cosigns_growth_and_refuses_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let log = KeyPair::from_seed(&[3; 32]);
    let w = Arc::new(Witness::open(dir.path(), "w-test", &[log.public_key()]).unwrap());
    let t = tree(40, None);

    // Its key, for auditors.
    let pk = send(&w, Request::get("/pubkey").body(Body::empty()).unwrap()).await;
    assert_eq!(pk.status, StatusCode::OK);
    assert_eq!(pk.json()["public_key"], w.public_key().to_hex());
    assert_eq!(pk.json()["name"], "w-test");

    // The first checkpoint, then growth with a proof.
    let c10 = checkpoint(&t, 10, 1, &log);
    let first = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        checkpoint: c10.clone(),
    };
    let a = add(&w, first.encode()).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let cosig: Cosignature = serde_json::from_slice(&a.body).unwrap();
    cosig.verify(&c10, &w.public_key()).unwrap();
    let c30 = checkpoint(&t, 30, 2, &log);
    let grow = AddCheckpoint {
        old_size: 10,
        proof: t.consistency_proof(10, 30).unwrap(),
        checkpoint: c30.clone(),
    };
    assert_eq!(add(&w, grow.encode()).await.status, StatusCode::OK);
    let held = send(
        &w,
        Request::get(format!("/checkpoint/{}", log.public_key().key_id()))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(held.status, StatusCode::OK);
    let held: CosignedCheckpoint = serde_json::from_slice(&held.body).unwrap();
    assert_eq!(held.checkpoint, c30);
    assert!(held.cosigned_by(&w.public_key()).is_some());

    // A stale `old`: 409 with the size held, as C2SP has it.
    let stale = add(&w, first.encode()).await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.content_type, "text/x.tlog.size");
    assert_eq!(stale.body, b"30\n");

    // A rewritten log: 422, and the held checkpoint stays.
    let forked = tree(40, Some(12));
    let fork = AddCheckpoint {
        old_size: 30,
        proof: forked.consistency_proof(30, 35).unwrap(),
        checkpoint: checkpoint(&forked, 35, 3, &log),
    };
    let refused = add(&w, fork.encode()).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.json()["error"], "inconsistent");
    assert_eq!(
        w.latest(&log.public_key().key_id()).unwrap().checkpoint,
        c30
    );

    // Another log: 404; a forged signature: 403.
    let stranger = KeyPair::from_seed(&[4; 32]);
    let other = AddCheckpoint {
        old_size: 0,
        proof: vec![],
        checkpoint: checkpoint(&t, 5, 1, &stranger),
    };
    let r = add(&w, other.encode()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "unknown_log");
    let mut forged = grow.clone();
    forged.old_size = 30;
    forged.proof = t.consistency_proof(30, 40).unwrap();
    forged.checkpoint = checkpoint(&t, 40, 4, &log);
    forged.checkpoint.root_hash = checkpoint(&forked, 40, 4, &log).root_hash;
    let r = add(&w, forged.encode()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["error"], "bad_signature");

    // Malformed bodies: 400 naming what is wrong; an oversized one: 413; never a cosignature.
    for (body, why) in [
        (b"".to_vec(), "no empty line"),
        (b"old x\n\n{}".to_vec(), "decimal size"),
        (b"old 1\nzz\n\n{}".to_vec(), "64 lowercase hex"),
        (vec![0xff, 0xfe, b'\n', b'\n'], "UTF-8"),
        (
            format!("old 30\n\n{}", "{\"tree_size\":1}").into_bytes(),
            "malformed checkpoint",
        ),
    ] {
        let r = add(&w, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(r.json()["error"], "malformed");
        let message = r.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(why), "{why}: {message}");
    }
    let big = add(&w, vec![b'a'; MAX_REQUEST_BYTES + 1]).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);

    // Unknown log id and unknown path: 404 JSON.
    let r = send(
        &w,
        Request::get("/checkpoint/0000000000000000")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = send(&w, Request::get("/nothing").body(Body::empty()).unwrap()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "not_found");
    assert_eq!(
        w.latest(&log.public_key().key_id()).unwrap().checkpoint,
        c30
    );
}
