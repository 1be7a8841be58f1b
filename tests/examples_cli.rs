//! The example programs at their edges: each bad input gives one line `error: ...` on stderr and a
//! non-zero exit (1 for bad input, 2 for bad usage), `--help` prints the usage and exits 0, a closed
//! stdout ends a program quietly, flags are checked before any work, `cascade --load` describes the
//! checkpoint it loaded, and progress written to a file is one line every tenth of the run.
//!
//! The examples are built by `cargo test` (into the `examples` folder beside the test binaries); run
//! the whole `cargo test`, or `cargo build --examples --profile test` before `cargo test --test
//! examples_cli`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The built example `name`.
fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("test binary path");
    let dir = deps.parent().and_then(Path::parent).expect("target profile folder").join("examples");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not built: run `cargo test` (it builds the examples) or `cargo build --examples --profile test`",
        path.display()
    );
    path
}

/// A fresh scratch folder for one test.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sd-attention-examples-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(name: &str, args: &[&str]) -> Output {
    Command::new(example(name))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .expect("example runs")
}

/// Asserts that `name args` failed with status `code` and exactly one stderr line, which starts with
/// `error: ` and contains `message`; returns the line.
fn fails_with(name: &str, args: &[&str], code: i32, message: &str) -> String {
    let out = run(name, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{name} {args:?}: stderr {stderr:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{name} {args:?}: one line expected, got {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{name} {args:?}: {stderr:?}");
    assert!(lines[0].contains(message), "{name} {args:?}: {:?} lacks {message:?}", lines[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    println!("{name} {}: {}", args.join(" "), lines[0]);
    lines[0].to_string()
}

/// A tiny S-D model for the cascade runs (a fraction of a second per step).
const TINY: &[&str] = &[
    "--layers",
    "2",
    "--d-model",
    "8",
    "--heads",
    "1",
    "--d-head",
    "4",
    "--d-mlp",
    "8",
    "--rank",
    "1",
    "--filter",
    "1",
    "--batch",
    "1",
    "--seq",
    "8",
    "--warmup",
    "1",
    "--eval-windows",
    "2",
];

#[test]
fn every_example_has_help() {
    for name in ["census", "split_real", "cascade", "linearize", "allocate", "generate", "tiny_model"] {
        let out = run(name, &["--help"]);
        assert_eq!(out.status.code(), Some(0), "{name} --help");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(name) && stdout.contains("--help"), "{name} --help: {stdout}");
        assert!(out.stderr.is_empty(), "{name} --help: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn census_bad_inputs_give_one_line_errors() {
    let dir = scratch("census");
    let not_safetensors = dir.join("notes.txt");
    std::fs::write(&not_safetensors, "hello").unwrap();
    let p = not_safetensors.to_str().unwrap();
    fails_with("census", &[p], 1, &format!("{p}: not a safetensors file"));
    fails_with("census", &["no/such/model.safetensors"], 1, "no/such/model.safetensors: ");
    fails_with(
        "census",
        &["data/gpt2-synthetic.safetensors", "--heads", "x"],
        2,
        "--heads: cannot parse \"x\"",
    );
    fails_with(
        "census",
        &["data/gpt2-synthetic.safetensors", "--heads", "0"],
        2,
        "--heads must be at least 1",
    );
    fails_with("census", &["data/gpt2-synthetic.safetensors", "--heads"], 2, "--heads needs a value");
    fails_with("census", &["data/gpt2-synthetic.safetensors", "--bogus"], 2, "unknown flag --bogus");
    fails_with(
        "census",
        &["data/gpt2-synthetic.safetensors", "--method", "svd"],
        2,
        "--method: expected exact or lanczos, got svd",
    );
    fails_with("census", &[], 2, "no model file given");
    fails_with(
        "census",
        &["data/gpt2-synthetic.safetensors", "--heads", "5"],
        1,
        "do not split into 5 heads",
    );
}

#[test]
fn split_real_bad_inputs_give_one_line_errors() {
    fails_with(
        "split_real",
        &["data/minilm-l6-v2-layer0-qk.safetensors", "x"],
        2,
        "LAYER: cannot parse \"x\"",
    );
    fails_with(
        "split_real",
        &["data/minilm-l6-v2-layer0-qk.safetensors", "0", "0"],
        2,
        "HEADS must be at least 1",
    );
    fails_with(
        "split_real",
        &["data/minilm-l6-v2-layer0-qk.safetensors", "3"],
        1,
        "encoder.layer.3.attention.self.query.weight",
    );
    fails_with("split_real", &["data/gpt2-synthetic.safetensors"], 1, "data/gpt2-synthetic.safetensors: ");
    fails_with("split_real", &["missing.safetensors"], 1, "missing.safetensors: ");
}

/// A closed stdout (`census MODEL | head -0`) ends the program quietly with status 0.
#[test]
fn closed_stdout_ends_quietly() {
    let dir = scratch("pipe");
    let (csv, svg) = (dir.join("out.csv"), dir.join("out.svg"));
    for (name, args) in [
        (
            "census",
            vec![
                "data/gpt2-synthetic.safetensors",
                "--csv",
                csv.to_str().unwrap(),
                "--svg",
                svg.to_str().unwrap(),
            ],
        ),
        ("split_real", vec![]),
    ] {
        let mut child = Command::new(example(name))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before the first line is written
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name}: {stderr}");
        assert!(stderr.is_empty(), "{name}: {stderr}");
    }
}

/// Flags are checked before any work: nothing is written for a run that cannot be done.
#[test]
fn cascade_checks_flags_before_any_work() {
    let dir = scratch("flags");
    let ckpt = dir.join("c.ckpt");
    let c = ckpt.to_str().unwrap();
    fails_with(
        "cascade",
        &["--layers", "0", "--steps", "0", "--checkpoint", c],
        2,
        "--layers must be at least 1, got 0",
    );
    fails_with("cascade", &["--steps", "0", "--checkpoint", c], 2, "--steps must be at least 1, got 0");
    fails_with("cascade", &["--lr", "-1", "--checkpoint", c], 2, "--lr must be a positive number");
    fails_with("cascade", &["--layers", "two"], 2, "--layers: cannot parse \"two\"");
    fails_with("cascade", &["--layers"], 2, "--layers needs a value");
    fails_with("cascade", &["--frobnicate"], 2, "unknown flag --frobnicate");
    fails_with("cascade", &["stray"], 2, "unexpected argument stray");
    fails_with("cascade", &["--corpus", "no/such/corpus", "--checkpoint", c], 1, "no/such/corpus: ");
    fails_with("cascade", &["--rank", "0", "--filter", "0"], 2, "--rank and --filter cannot both be 0");
    fails_with("cascade", &["--seeds", "0"], 2, "--seeds must be at least 1, got 0");
    fails_with("linearize", &["--jobs", "0"], 2, "--jobs must be at least 1, got 0");
    fails_with(
        "linearize",
        &["--baseline-norm", "batch"],
        2,
        "--baseline-norm: \"batch\" is not none, rms or layer",
    );
    fails_with("linearize", &["--lr-baseline", "0"], 2, "--lr-baseline must be a positive number");
    fails_with("allocate", &["--load", "no/such.ckpt"], 1, "no/such.ckpt: ");
    fails_with("allocate", &["--batch", "0"], 2, "--batch must be at least 1, got 0");
    fails_with("tiny_model", &["--d-model", "0"], 2, "--d-model must be at least 1, got 0");
    assert!(!ckpt.exists(), "a checkpoint was written by a run that failed its flags");
}

/// The generate example: a missing checkpoint, bad flags and a file that is not a checkpoint.
#[test]
fn generate_bad_inputs_give_one_line_errors() {
    let dir = scratch("generate");
    fails_with("generate", &["--load", "no/such.ckpt"], 1, "no/such.ckpt: no such checkpoint");
    fails_with("generate", &["--bytes", "many"], 2, "--bytes: \"many\" is not a whole number of bytes");
    fails_with("generate", &["--temperature", "-1"], 2, "--temperature: -1 is not a finite number >= 0");
    fails_with("generate", &["--top-p", "0"], 2, "--top-p: 0 is not in (0, 1]");
    fails_with("generate", &["--prompt", ""], 2, "--prompt: needs at least one byte");
    fails_with("generate", &["--bytes"], 2, "--bytes needs a value");
    fails_with("generate", &["--frobnicate", "1"], 2, "unknown flag --frobnicate");
    fails_with("generate", &["stray"], 2, "unexpected argument stray");
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "hello").unwrap();
    let n = notes.to_str().unwrap();
    fails_with("generate", &["--load", n], 1, &format!("{n}: malformed input at byte 5: truncated"));
    std::fs::write(&notes, "these are notes, not a checkpoint").unwrap();
    fails_with("generate", &["--load", n], 1, &format!("{n}: malformed input at byte 0"));
}

/// `cascade` trains a 2-layer model and writes its checkpoint, then `--load` (with the default
/// flags, which say 8 layers) describes the 2-layer checkpoint; a corrupted copy is a checksum
/// mismatch over the whole file. Progress into a pipe is one line per tenth of the steps, no `\r`.
/// `generate` runs the checkpoint, and refuses the corrupted copy and a prompt longer than its
/// context.
#[test]
fn cascade_load_describes_the_checkpoint_and_progress_suits_a_log() {
    let dir = scratch("load");
    let ckpt = dir.join("tiny.ckpt");
    let svg = dir.join("tiny.svg");
    let (c, s) = (ckpt.to_str().unwrap(), svg.to_str().unwrap());
    let mut args = TINY.to_vec();
    args.extend(["--steps", "20", "--checkpoint", c, "--svg", s]);
    let out = run("cascade", &args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains('\r'), "progress into a pipe must not redraw: {stderr:?}");
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("seed 1: step ")).collect();
    assert_eq!(progress.len(), 10, "one line every 2 of 20 steps: {stderr}");
    assert!(progress[9].starts_with("seed 1: step 20/20"), "{stderr}");
    assert!(stdout.contains("2 layers x 1 heads") && stdout.contains("at init"), "{stdout}");

    let out = run("cascade", &["--load", c, "--svg", s, "--eval-windows", "2"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!("checkpoint {c}: S-D model without norm: d_model 8, 2 layers x 1 heads")),
        "{stdout}"
    );
    assert!(stdout.contains("20 training steps"), "{stdout}");
    assert!(!stdout.contains("8 layers") && !stdout.contains("training 2000 steps"), "{stdout}");
    let layer_rows =
        stdout.lines().filter(|l| l.contains(" | ") && l.trim_start().starts_with(char::is_numeric));
    assert_eq!(layer_rows.count(), 2, "one row per layer of the checkpoint: {stdout}");

    let out = run("generate", &["--load", c, "--bytes", "5", "--prompt", "ab"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout.len(), 2 + 5 + 1, "prompt, 5 bytes, newline: {:?}", out.stdout);
    fails_with(
        "generate",
        &["--load", c, "--prompt", "123456789"],
        2,
        "--prompt: 9 tokens do not fit in the model's context of 8 positions",
    );

    let mut bytes = std::fs::read(&ckpt).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let bad = dir.join("corrupted.ckpt");
    std::fs::write(&bad, &bytes).unwrap();
    let b = bad.to_str().unwrap();
    let line = fails_with("cascade", &["--load", b], 1, &format!("{b}: checksum mismatch"));
    assert!(line.contains("over the whole checkpoint file"), "{line}");
    fails_with("allocate", &["--load", b], 1, &format!("{b}: checksum mismatch"));
    fails_with(
        "generate",
        &["--load", b],
        1,
        &format!("{b}: checksum mismatch over the whole checkpoint file"),
    );
    let truncated = dir.join("truncated.ckpt");
    std::fs::write(&truncated, &bytes[..40]).unwrap();
    let t = truncated.to_str().unwrap();
    fails_with("cascade", &["--load", t], 1, &format!("{t}: malformed input at byte 40: truncated"));
}
