use super::*;

fn claim() -> Claim {
    Claim {
        format_version: FORMAT_VERSION,
        tally_version: "0.1.0".into(),
        engine: EngineInfo {
            wasmtime_version: "48.0.8".into(),
            profile: Digest::of(b"p"),
            target: Digest::of(b"t"),
        },
        backend: BackendInfo {
            kind: "portable".into(),
            detail: "d".into(),
        },
        package_id: Digest::of(b"pkg"),
        input: Digest::of(b"in"),
        output: Digest::of(b"out"),
        output_len: 3,
        seed: Digest::of(b"seed"),
        limits: tally_manifest::Limits::default().resolve(),
        stages: vec![StageClaim {
            name: "s".into(),
            module: Digest::of(b"m"),
            stdin: Digest::of(b"in"),
            stdout: Digest::of(b"out"),
            stderr: Digest::of(b""),
            fuel_consumed: 10,
            host_calls: 2,
        }],
        fuel_consumed: 10,
        outcome: Outcome::Ok,
        transcript_root: Transcript::new().root(),
        host_calls: 0,
    }
}

fn key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

#[test]
fn claim_digest_is_pinned() {
    // Changing the claim encoding is a format change: bump FORMAT_VERSION.
    assert_eq!(
        claim().digest().to_string(),
        "723bec0b71ee4e0af1b5003fcff114616f2e3e40836712b69c9d0806d8308f80"
    );
}

#[test]
fn every_outcome_is_pinned_in_json_and_in_the_claim() {
    let outcomes = [
        Outcome::Ok,
        Outcome::Exit {
            stage: "s".into(),
            code: -3,
        },
        Outcome::Trap {
            stage: "s".into(),
            trap: "unreachable_code_reached".into(),
        },
        Outcome::LimitExceeded {
            stage: "s".into(),
            limit: Limit::OutputBytes,
        },
        Outcome::Rejected {
            stage: "s".into(),
            reason: "not wasm".into(),
        },
        Outcome::Aborted {
            stage: "s".into(),
            reason: AbortReason::HostError,
            detail: "out of memory".into(),
        },
        Outcome::Aborted {
            stage: "s".into(),
            reason: AbortReason::WallTime,
            detail: String::new(),
        },
    ];
    let json: Vec<String> = outcomes
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect();
    assert_eq!(
        json,
        [
            r#"{"kind":"ok"}"#,
            r#"{"kind":"exit","stage":"s","code":-3}"#,
            r#"{"kind":"trap","stage":"s","trap":"unreachable_code_reached"}"#,
            r#"{"kind":"limit_exceeded","stage":"s","limit":"output_bytes"}"#,
            r#"{"kind":"rejected","stage":"s","reason":"not wasm"}"#,
            r#"{"kind":"aborted","stage":"s","reason":"host_error","detail":"out of memory"}"#,
            r#"{"kind":"aborted","stage":"s","reason":"wall_time"}"#,
        ]
    );
    let mut all = tally_digest::Canon::new("test");
    for o in outcomes {
        assert_eq!(
            serde_json::from_str::<Outcome>(&serde_json::to_string(&o).unwrap()).unwrap(),
            o
        );
        all.digest(
            &Claim {
                outcome: o,
                ..claim()
            }
            .digest(),
        );
    }
    assert_eq!(
        all.finish().to_string(),
        "47798a3bfaafdd2d368192ad4f710c86c9d87a41b903635f8aa112e901a3b622"
    );
}

#[test]
fn sealed_receipts_round_trip_and_verify() {
    let k = key();
    let r = Receipt::seal(claim(), &k, Metadata::default());
    let back = Receipt::from_json(&r.to_json()).unwrap();
    assert_eq!(back, r);
    back.check_seal(&[]).unwrap();
    back.check_seal(&[hex::encode(k.verifying_key().as_bytes())])
        .unwrap();
}

#[test]
fn an_edited_field_breaks_the_seal() {
    let r = Receipt::seal(claim(), &key(), Metadata::default());
    let mut edited = r.clone();
    edited.claim.fuel_consumed += 1;
    assert!(
        matches!(edited.check_seal(&[]), Err(ReceiptError::BadSeal(m)) if m.contains("edited"))
    );
    // Editing the digest in the seal too does not help: the signature fails.
    edited.seal.claim_digest = edited.claim.digest();
    assert!(
        matches!(edited.check_seal(&[]), Err(ReceiptError::BadSeal(m)) if m.contains("forged"))
    );
}

#[test]
fn metadata_is_not_bound() {
    let mut r = Receipt::seal(claim(), &key(), Metadata::default());
    r.metadata.host = "elsewhere".into();
    r.check_seal(&[]).unwrap();
}

#[test]
fn resealed_by_another_key_is_untrusted() {
    let r = Receipt::seal(claim(), &key(), Metadata::default());
    let trusted = vec![r.seal.host_key.clone()];
    let forged = Receipt::seal(claim(), &key(), Metadata::default());
    assert!(matches!(
        forged.check_seal(&trusted),
        Err(ReceiptError::UntrustedHost { .. })
    ));
}

#[test]
fn truncated_unknown_and_future_receipts_are_rejected() {
    let json = Receipt::seal(claim(), &key(), Metadata::default()).to_json();
    assert!(matches!(
        Receipt::from_json(&json[..json.len() / 2]),
        Err(ReceiptError::Malformed(_))
    ));
    let extra = json.replacen("\"claim\": {", "\"claim\": {\"bonus\": 1,", 1);
    assert!(
        matches!(Receipt::from_json(&extra), Err(ReceiptError::Malformed(m)) if m.contains("bonus"))
    );
    let future = json.replacen(
        &format!("\"format_version\": {FORMAT_VERSION}"),
        "\"format_version\": 9",
        1,
    );
    assert!(matches!(
        Receipt::from_json(&future),
        Err(ReceiptError::UnsupportedVersion { found: 9 })
    ));
}

#[test]
fn compare_names_fields_and_ignores_the_target() {
    let a = claim();
    let mut b = claim();
    b.stages[0].fuel_consumed = 11;
    b.engine.target = Digest::of(b"pulley");
    b.outcome = Outcome::Trap {
        stage: "s".into(),
        trap: "unreachable".into(),
    };
    let m = compare(&a, &b);
    let fields: Vec<&str> = m.iter().map(|m| m.field.as_str()).collect();
    assert_eq!(fields, ["outcome", "stages[0].fuel_consumed"]);
    assert_eq!(m[1].expected, "10");
    assert_eq!(m[1].found, "11");
    assert!(compare(&a, &a).is_empty());
}

fn call(i: i64) -> HostCall {
    HostCall {
        stage: 0,
        func: "wasi_snapshot_preview1.random_get".into(),
        params: vec![i, 8],
        results: vec![0],
        data: Some(Digest::of(&i.to_le_bytes())),
        detail: None,
    }
}

#[test]
fn transcripts_chain_serialise_and_localise_divergence() {
    let mut a = Transcript::new();
    let mut b = Transcript::new();
    for i in 0..5 {
        a.push(call(i));
        b.push(call(if i == 3 { 99 } else { i }));
    }
    assert_ne!(a.root(), b.root());
    let back = Transcript::from_jsonl(&a.to_jsonl(), &a.root()).unwrap();
    assert_eq!(back, a);
    assert!(matches!(
        Transcript::from_jsonl(&a.to_jsonl(), &b.root()),
        Err(TranscriptError::RootMismatch { .. })
    ));
    let d = Transcript::first_divergence(&a, &b).unwrap();
    assert_eq!(d.index, 3);
    assert_eq!(d.expected.unwrap().params[0], 3);
    let mut shorter = Transcript::new();
    shorter.push(call(0));
    assert_eq!(Transcript::first_divergence(&a, &shorter).unwrap().index, 1);
    assert!(Transcript::first_divergence(&a, &a).is_none());
}

#[test]
fn recorded_outputs_round_trip_and_must_match_the_transcript() {
    let outputs = [b"first".to_vec(), Vec::new(), b"third".to_vec()];
    let mut t = Transcript::new();
    for o in &outputs {
        t.push(HostCall {
            stage: 0,
            func: NN_COMPUTE.into(),
            params: vec![0],
            results: vec![0],
            data: Some(Digest::of(o)),
            detail: None,
        });
    }
    let bytes = encode_recorded(&outputs);
    assert_eq!(decode_recorded(&bytes, &t).unwrap(), outputs);
    // Cut short, inside a body and inside a length.
    for cut in [bytes.len() - 1, 8 + 5 + 3] {
        assert!(matches!(
            decode_recorded(&bytes[..cut], &t),
            Err(RecordedError::Truncated { .. })
        ));
    }
    // One compute missing, one too many.
    assert_eq!(
        decode_recorded(&encode_recorded(&outputs[..2]), &t),
        Err(RecordedError::Count {
            expected: 3,
            found: 2
        })
    );
    let mut more = outputs.to_vec();
    more.push(b"extra".to_vec());
    assert!(matches!(
        decode_recorded(&encode_recorded(&more), &t),
        Err(RecordedError::Count { expected: 3, .. })
    ));
    // Forged outputs: the digest names the compute.
    let mut forged = outputs.to_vec();
    forged[2] = b"thirD".to_vec();
    match decode_recorded(&encode_recorded(&forged), &t) {
        Err(RecordedError::DigestMismatch {
            index, expected, ..
        }) => {
            assert_eq!((index, expected), (2, Digest::of(b"third")));
        }
        other => panic!("{other:?}"),
    }
    // A length that does not fit in memory is truncation, not a panic.
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"x");
    assert!(decode_recorded(&huge, &t).is_err());
}

#[test]
fn recorded_computes_are_matched_to_compute_calls_failed_ones_included() {
    // An honest run: compute #0 succeeded, #1 failed in the backend, #2
    // succeeded. Only #0 and #2 have recorded outputs; a replay must meet
    // the failure at call #1, not feed it #2's outputs.
    let compute = |results: Vec<i64>, data: Option<Digest>, detail: Option<&str>| HostCall {
        stage: 0,
        func: NN_COMPUTE.into(),
        params: vec![0],
        results,
        data,
        detail: detail.map(Into::into),
    };
    let (a, c) = (b"first".to_vec(), b"third".to_vec());
    let mut t = Transcript::new();
    t.push(compute(vec![0], Some(Digest::of(&a)), Some("g cost=1")));
    t.push(compute(
        vec![5],
        None,
        Some("graph `g`: the backend failed"),
    ));
    t.push(compute(vec![0], Some(Digest::of(&c)), Some("g cost=1")));
    let r = RecordedComputes::decode(&encode_recorded(&[&a, &c]), &t).unwrap();
    assert_eq!(
        r.calls(),
        &[
            RecordedCompute::Computed(a.clone()),
            RecordedCompute::Failed {
                results: vec![5],
                detail: Some("graph `g`: the backend failed".into())
            },
            RecordedCompute::Computed(c.clone()),
        ]
    );
    // Bound again when built from a store's outputs.
    assert!(matches!(
        RecordedComputes::new(&t, vec![a.clone()]),
        Err(RecordedError::Count {
            expected: 2,
            found: 1
        })
    ));
    assert!(matches!(
        RecordedComputes::new(&t, vec![c.clone(), a.clone()]),
        Err(RecordedError::DigestMismatch { index: 0, .. })
    ));
}

#[test]
fn transcript_step_is_pinned() {
    // Changing the step encoding changes every transcript root: bump
    // STEP_TAG / TRANSCRIPT_TAG.
    let mut t = Transcript::new();
    t.push(HostCall {
        stage: 1,
        func: "wasi_snapshot_preview1.fd_read".into(),
        params: vec![3, -1],
        results: vec![0],
        data: Some(Digest::of(b"read")),
        detail: Some("pkg/labels.txt".into()),
    });
    t.push(HostCall {
        stage: 2,
        func: "wasi_snapshot_preview1.proc_exit".into(),
        params: vec![i64::MIN],
        results: vec![],
        data: None,
        detail: None,
    });
    assert_eq!(
        t.root().to_string(),
        "06fc6ce2b75fe554698532e871ba373c6305b882f568b3946eb4ecfc06ceaf0b"
    );
}
