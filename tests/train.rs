//! Optimizer, clipping, schedule, checksums, checkpoints and the corpus loader.
#![cfg(feature = "std")]

use sd_attention::model::config::{AttentionKind, ModelConfig, PositionKind};
use sd_attention::model::norm::NormKind;
use sd_attention::rng::SplitMix64;
use sd_attention::train::adamw::{adamw_update, AdamWConfig};
use sd_attention::train::checkpoint::{Checkpoint, OptimizerState};
use sd_attention::train::checksum::{crc32, fnv1a64};
use sd_attention::train::clip::clip_global_norm;
use sd_attention::train::corpus::{eval_windows, BatchSampler, Corpus, Split, DEFAULT_DIR};
use sd_attention::train::schedule::WarmupCosine;
use sd_attention::Error;

#[test]
fn adamw_matches_a_hand_step_and_torch() {
    let config = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };
    // Step 1 by hand for p = 1, g = 0.5, lr = 0.1: m_hat = 0.5, v_hat = 0.25, so
    // p = 1 (1 - 0.1 * 0.01) - 0.1 * 0.5 / (0.5 + 1e-8) = 0.999 - 0.09999999800000004.
    let mut p = [1.0f64, -2.0, 0.5];
    let mut q = [0.3f64, 0.7];
    let (mut mp, mut vp, mut mq, mut vq) = ([0.0; 3], [0.0; 3], [0.0; 2], [0.0; 2]);
    // torch.optim.AdamW (f64), tests/reference/adamw_torch.py: p decayed, q not.
    let grads =
        [([0.5, -1.0, 2.0], [0.1, -0.2]), ([-1.0, 0.25, 0.0], [0.3, 0.3]), ([0.2, 0.2, -3.0], [-0.5, 1.0])];
    let torch = [
        ([0.899000002, -1.898000001, 0.3995000005], [0.200000009999999, 0.7999999950000002]),
        (
            [0.9347113542385653, -1.8491551845224583, 0.33209467555976746],
            [0.1082219022055899, 0.775229814358057],
        ),
        (
            [0.9503783943808728, -1.8238609348545922, 0.3562202555960888],
            [0.12431333209578328, 0.7086400700067796],
        ),
    ];
    for (step, ((gp, gq), (ep, eq))) in grads.iter().zip(&torch).enumerate() {
        adamw_update(&config, step as u64 + 1, 0.1, true, &mut p, gp, &mut mp, &mut vp).unwrap();
        adamw_update(&config, step as u64 + 1, 0.1, false, &mut q, gq, &mut mq, &mut vq).unwrap();
        if step == 0 {
            assert!((p[0] - (0.999 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-16);
        }
        for (a, b) in p.iter().zip(ep).chain(q.iter().zip(eq)) {
            assert!((a - b).abs() <= 4.0 * f64::EPSILON * b.abs(), "step {step}: {a} vs torch {b}");
        }
    }
    assert!(matches!(
        adamw_update(&config, 0, 0.1, true, &mut p, &[0.0; 3], &mut mp, &mut vp),
        Err(Error::InvalidParameter { what: "step", .. })
    ));
    let bad = AdamWConfig { beta2: 1.0, ..config };
    assert!(adamw_update(&bad, 1, 0.1, true, &mut p, &[0.0; 3], &mut mp, &mut vp).is_err());
    assert!(matches!(
        adamw_update(&config, 1, 0.1, true, &mut p, &[0.0; 2], &mut mp, &mut vp),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn warmup_cosine_values() {
    let s = WarmupCosine::new(1e-3, 1e-4, 10, 110).unwrap();
    assert_eq!(s.lr(0), 1e-4);
    assert!((s.lr(4) - 5e-4).abs() < 1e-18);
    assert_eq!(s.lr(9), 1e-3);
    assert_eq!(s.lr(10), 1e-3);
    // A quarter of the way down: 1e-4 + 0.9e-3 (1 + cos(pi / 4)) / 2.
    assert!((s.lr(35) - 8.681_980_515_339_464e-4).abs() < 1e-17);
    assert!((s.lr(60) - 5.5e-4).abs() < 1e-17);
    assert_eq!(s.lr(110), 1e-4);
    assert_eq!(s.lr(u64::MAX), 1e-4);
    let no_warmup = WarmupCosine::new(1.0, 0.0, 0, 4).unwrap();
    assert_eq!(no_warmup.lr(0), 1.0);
    assert!((no_warmup.lr(2) - 0.5).abs() < 1e-16);
    assert!(WarmupCosine::new(1e-3, 1e-2, 0, 10).is_err());
    assert!(WarmupCosine::new(1e-3, 0.0, 11, 10).is_err());
    assert!(WarmupCosine::new(f64::NAN, 0.0, 1, 10).is_err());
}

#[test]
fn clipping_scales_to_the_global_norm_and_rejects_non_finite() {
    let mut g = [3.0f32, 0.0, 4.0];
    assert_eq!(clip_global_norm(&mut g, 1.0).unwrap(), 5.0);
    assert!((g[0] - 0.6).abs() < 1e-7 && (g[2] - 0.8).abs() < 1e-7);
    let mut small = [0.3f64, 0.4];
    assert_eq!(clip_global_norm(&mut small, 1.0).unwrap(), 0.5);
    assert_eq!(small, [0.3, 0.4]); // below the threshold: untouched
    let mut huge = [1e200f64, 1e200];
    assert_eq!(clip_global_norm(&mut huge, 1.0).unwrap(), 1e200 * 2f64.sqrt()); // no overflow
    assert!((huge[0] - 0.5f64.sqrt()).abs() < 1e-15);
    let mut nan = [1.0f64, f64::NAN];
    assert_eq!(clip_global_norm(&mut nan, 1.0), Err(Error::NonFinite { what: "grads", index: 1 }));
    assert_eq!(nan[0], 1.0);
    assert!(clip_global_norm(&mut [1.0f64], 0.0).is_err());
}

#[test]
fn checksum_check_values() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"a"), 0xE8B7_BE43);
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

fn small_config() -> ModelConfig {
    ModelConfig {
        d_model: 2,
        n_layers: 2,
        n_heads: 1,
        d_head: 1,
        d_mlp: 3,
        context_len: 4,
        attention: vec![AttentionKind::Sd { routing_rank: 1, filtering_rank: 1 }, AttentionKind::Linear],
        norm: NormKind::Layer,
        positions: PositionKind::Learned,
        tied_unembedding: false,
    }
}

fn random_checkpoint<T: sd_attention::Scalar>(
    config: ModelConfig,
    with_optimizer: bool,
    seed: u64,
) -> Checkpoint<T> {
    let total = config.param_counts().unwrap().total;
    let mut rng = SplitMix64::new(seed);
    let mut draw = |n: usize| (0..n).map(|_| rng.normal::<T>()).collect::<Vec<T>>();
    let params = draw(total);
    let optimizer = with_optimizer.then(|| OptimizerState { step: 12345, m: draw(total), v: draw(total) });
    Checkpoint { config, params, optimizer }
}

#[test]
fn checkpoint_round_trip_is_bit_exact() {
    for with_opt in [false, true] {
        let mut c32 = random_checkpoint::<f32>(small_config(), with_opt, 1);
        // Non-finite values and NaN payloads survive bit for bit.
        c32.params[0] = f32::from_bits(0x7F80_0001); // signaling NaN
        c32.params[1] = f32::NEG_INFINITY;
        c32.params[2] = -0.0;
        let bytes = c32.encode().unwrap();
        let back = Checkpoint::<f32>::decode(&bytes).unwrap();
        assert_eq!(back.config, c32.config);
        assert!(back.params.iter().zip(&c32.params).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(back.encode().unwrap(), bytes);
        let mut cfg = small_config();
        cfg.norm = NormKind::None;
        cfg.positions = PositionKind::Sinusoidal;
        cfg.tied_unembedding = true;
        cfg.attention[1] = AttentionKind::Softmax;
        let c64 = random_checkpoint::<f64>(cfg, with_opt, 2);
        let bytes = c64.encode().unwrap();
        let back = Checkpoint::<f64>::decode(&bytes).unwrap();
        assert_eq!(back, c64);
        assert!(back.params.iter().zip(&c64.params).all(|(a, b)| a.to_bits() == b.to_bits()));
        // Header size: 52 + 12 L + 8 + 4 + buffers (8 + 8 total each) + 4.
        let total = c64.config.param_counts().unwrap().total;
        let buffers = if with_opt { 3 } else { 1 };
        assert_eq!(bytes.len(), 52 + 24 + 12 + buffers * (8 + 8 * total) + 4);
    }
    // A linear layer of its own query/key width (stored as kind 3 with the width).
    let mut cfg = small_config();
    cfg.attention[1] = AttentionKind::LinearQk { qk_width: 3 };
    let c = random_checkpoint::<f32>(cfg, false, 6);
    let bytes = c.encode().unwrap();
    assert_eq!(bytes[52 + 12..52 + 24], [3, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(Checkpoint::<f32>::decode(&bytes).unwrap(), c);
}

/// The layer table's kind 3 (linear of its own query/key width) with a stray third field, or with
/// width 0, is rejected.
#[test]
fn checkpoint_rejects_bad_linear_query_key_widths() {
    let mut cfg = small_config();
    cfg.attention[1] = AttentionKind::LinearQk { qk_width: 3 };
    let good = random_checkpoint::<f32>(cfg, false, 7).encode().unwrap();
    let fix_crc = |b: &mut Vec<u8>| {
        let n = b.len() - 4;
        let crc = crc32(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
    };
    let mut stray = good.clone();
    stray[52 + 20] = 1; // the layer's third field
    fix_crc(&mut stray);
    assert_eq!(malformed_at(Checkpoint::decode(&stray)), ("unknown attention kind or stray ranks", 64));
    let mut zero = good.clone();
    zero[52 + 16] = 0; // the width
    fix_crc(&mut zero);
    assert!(Checkpoint::<f32>::decode(&zero).is_err());
}

fn malformed_at(r: Result<Checkpoint<f32>, Error>) -> (&'static str, usize) {
    match r {
        Err(Error::Malformed { what, offset }) => (what, offset),
        other => panic!("expected Malformed, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn checkpoint_rejects_truncated_corrupted_and_foreign_input() {
    let good = random_checkpoint::<f32>(small_config(), true, 3).encode().unwrap();
    // Every truncation.
    for len in 0..good.len() {
        let (_, offset) = malformed_at(Checkpoint::decode(&good[..len]));
        assert!(offset <= len);
    }
    // A single-bit flip at every byte (bit `i mod 8`): CRC-32 detects every single-bit error. A flip
    // that leaves the file well-formed is a checksum mismatch over the whole file.
    let mut mismatches = 0;
    for i in 0..good.len() {
        let mut bad = good.clone();
        bad[i] ^= 1 << (i % 8);
        match Checkpoint::<f32>::decode(&bad) {
            Err(Error::ChecksumMismatch { what: "checkpoint", covered }) => {
                assert_eq!(covered, good.len() - 4);
                mismatches += 1;
            }
            other => {
                malformed_at(other);
            }
        }
    }
    // Every parameter and optimizer value is covered by the checksum alone.
    assert!(mismatches >= 3 * small_config().param_counts().unwrap().total, "{mismatches}");
    assert_eq!(
        Error::ChecksumMismatch { what: "checkpoint", covered: 120 }.to_string(),
        "checksum mismatch over the whole checkpoint file (bytes 0..120): the file is corrupted"
    );
    // Foreign files.
    assert_eq!(
        malformed_at(Checkpoint::decode(b"PK\x03\x04 a zip file, not a checkpoint")),
        ("not a checkpoint (magic)", 0)
    );
    let mut v2 = good.clone();
    v2[8] = 2;
    assert_eq!(malformed_at(Checkpoint::decode(&v2)), ("unsupported version", 8));
    let f64_file = random_checkpoint::<f64>(small_config(), false, 4).encode().unwrap();
    assert_eq!(malformed_at(Checkpoint::decode(&f64_file)).1, 12);
    // A step count without optimizer state (found by the fuzzer: it would not re-encode the same).
    let plain = random_checkpoint::<f32>(small_config(), false, 5).encode().unwrap();
    let mut stray_step = plain.clone();
    stray_step[76] = 7; // step field: after 52 + 12 * 2 bytes of header
    assert_eq!(malformed_at(Checkpoint::decode(&stray_step)), ("optimizer step without optimizer state", 76));
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(malformed_at(Checkpoint::decode(&trailing)).0, "trailing bytes after the checksum");
    // A header claiming 2^32 - 1 layers or a huge model is rejected before anything is allocated.
    let mut many_layers = good.clone();
    many_layers[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(malformed_at(Checkpoint::decode(&many_layers)).0, "truncated: layer table");
    let mut wide = good.clone();
    wide[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let (what, _) = malformed_at(Checkpoint::decode(&wide));
    assert!(what.starts_with("buffer length") || what.starts_with("truncated"), "{what}");
}

#[test]
fn shakespeare_corpus_facts_and_split() {
    let corpus = Corpus::load(DEFAULT_DIR).unwrap();
    let train: Vec<_> = corpus.plays(Split::Train).map(|p| p.name.as_str()).collect();
    let valid: Vec<_> = corpus.plays(Split::Valid).map(|p| p.name.as_str()).collect();
    assert_eq!((train.len(), valid.len()), (34, 4));
    assert_eq!(valid, ["hamlet", "henry-v", "the-tempest", "twelfth-night"]);
    assert!(train.iter().all(|p| !valid.contains(p)));
    assert_eq!(corpus.train.len(), 4_448_088);
    assert_eq!(corpus.valid.len(), 538_920);
    assert!(corpus.train.iter().chain(&corpus.valid).all(|&b| b == b'\n' || (32..127).contains(&b)));
    assert!(corpus.valid.starts_with(b"Hamlet\n\nACT I\n"));
    // A tampered text or manifest is rejected.
    let manifest = std::fs::read_to_string(format!("{DEFAULT_DIR}/MANIFEST.tsv")).unwrap();
    let mut tampered = corpus.valid.clone();
    tampered[100] ^= 1;
    assert!(matches!(Corpus::new(corpus.train.clone(), tampered, &manifest), Err(Error::Malformed { .. })));
    let short = manifest.lines().take(10).collect::<Vec<_>>().join("\n");
    assert!(Corpus::new(corpus.train.clone(), corpus.valid.clone(), &short).is_err());
}

#[test]
fn batches_are_deterministic_shifted_windows() {
    let text: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let (batch, seq) = (8, 16);
    let (mut t1, mut y1) = (vec![0u8; batch * seq], vec![0u8; batch * seq]);
    let (mut t2, mut y2) = (t1.clone(), y1.clone());
    BatchSampler::new(9).fill(&text, seq, &mut t1, &mut y1).unwrap();
    BatchSampler::new(9).fill(&text, seq, &mut t2, &mut y2).unwrap();
    assert_eq!((&t1, &y1), (&t2, &y2));
    let mut other = BatchSampler::new(10);
    other.fill(&text, seq, &mut t2, &mut y2).unwrap();
    assert_ne!(t1, t2);
    for (tok, tgt) in t1.chunks(seq).zip(y1.chunks(seq)) {
        // Each window is a substring of the text and the targets are the next bytes.
        let start = text.windows(seq).position(|w| w == tok).unwrap();
        assert_eq!(tgt, &text[start + 1..start + seq + 1]);
    }
    assert!(BatchSampler::new(0).fill(&text[..16], 16, &mut t1[..16], &mut y1[..16]).is_err());
    assert!(BatchSampler::new(0).fill(&text, 0, &mut t1, &mut y1).is_err());
    let windows: Vec<_> = eval_windows(&text, 100).collect();
    assert_eq!(windows.len(), 9); // (1000 - 1) / 100
    assert_eq!(windows[3].0, &text[300..400]);
    assert_eq!(windows[3].1, &text[301..401]);
    assert_eq!(eval_windows(&text, 0).count(), 0);
}
