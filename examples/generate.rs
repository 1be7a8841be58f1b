//! Generates text with a trained checkpoint through the allocation-free incremental decoder
//! (`sd_attention::inference`): the prompt is prefilled through the parallel kernels, then each
//! byte is sampled from the logits of one `step`. The text streams to stdout as it is made; then
//! stderr gets the speed (tokens/s) and the decoder state's bytes per layer.
//!
//! ```text
//! cargo run --release --example cascade          # trains and writes target/cascade.ckpt
//! cargo run --release --example generate -- --load target/cascade.ckpt --prompt "ROMEO:" \
//!     --bytes 400 --temperature 0.8 --seed 1
//! cargo run --release --example generate -- --help
//! ```
//!
//! When the context is full, the decoder refuses the next step (positions are learned, so there is
//! no position past the last); the program then starts again from the last half of the context
//! (one prefill) and goes on.

#[path = "support/cli.rs"]
#[macro_use]
mod cli;

use cli::{fail, fail_on, usage_error};
use sd_attention::inference::{
    layer_state_bytes, state_len, workspace_len, CheckpointView, Decoder, DecoderState, ModelView, Sampler,
};
use sd_attention::model::config::AttentionKind;
use sd_attention::Error;
use std::io::Write;
use std::process::exit;
use std::time::Instant;

const HELP: &str = "generate: sample text from a trained checkpoint with the incremental decoder

usage: generate [flags]

flags:
  --load PATH          checkpoint to run (default target/cascade.ckpt; made by
                       `cargo run --release --example cascade`)
  --prompt TEXT        text to start from, at least one byte (default \"ROMEO:\")
  --bytes N            bytes to generate (default 400)
  --temperature T      sampling temperature, >= 0; 0 is greedy (default 0.8)
  --top-k K            sample among the K most likely bytes; 0 keeps all (default 0)
  --top-p P            sample among the most likely bytes whose probabilities reach P, in (0, 1]
                       (default 1)
  --seed S             seed of the sampler (default 1)
  --help               this text

The text goes to stdout as it is generated; the speed and the decoder state's size go to stderr.";

struct Options {
    load: String,
    prompt: String,
    bytes: usize,
    temperature: f64,
    top_k: usize,
    top_p: f64,
    seed: u64,
}

fn parse_args() -> Options {
    let mut o = Options {
        load: "target/cascade.ckpt".into(),
        prompt: "ROMEO:".into(),
        bytes: 400,
        temperature: 0.8,
        top_k: 0,
        top_p: 1.0,
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            outln!("{HELP}");
            exit(0);
        }
        let known = flag.starts_with("--") && HELP.contains(&format!("  {flag} "));
        if !known {
            let what = if flag.starts_with('-') { "unknown flag" } else { "unexpected argument" };
            usage_error(&format!("{what} {flag}"));
        }
        let Some(value) = args.next() else { usage_error(&format!("{flag} needs a value")) };
        let number = |what: &str| -> f64 {
            value
                .parse::<f64>()
                .unwrap_or_else(|e| usage_error(&format!("{flag}: {value:?} is not {what}: {e}")))
        };
        let count = |what: &str| -> u64 {
            value
                .parse::<u64>()
                .unwrap_or_else(|e| usage_error(&format!("{flag}: {value:?} is not {what}: {e}")))
        };
        match flag.as_str() {
            "--load" => o.load = value,
            "--prompt" => o.prompt = value,
            "--bytes" => o.bytes = count("a whole number of bytes") as usize,
            "--temperature" => {
                o.temperature = number("a number");
                if !(o.temperature.is_finite() && o.temperature >= 0.0) {
                    usage_error(&format!("--temperature: {value} is not a finite number >= 0"));
                }
            }
            "--top-k" => o.top_k = count("a whole number") as usize,
            "--top-p" => {
                o.top_p = number("a number");
                if !(o.top_p > 0.0 && o.top_p <= 1.0) {
                    usage_error(&format!("--top-p: {value} is not in (0, 1]"));
                }
            }
            "--seed" => o.seed = count("a whole number"),
            _ => usage_error(&format!("unknown flag {flag}")),
        }
    }
    if o.prompt.is_empty() {
        usage_error("--prompt: needs at least one byte");
    }
    if o.load.is_empty() {
        usage_error("--load: needs a path");
    }
    o
}

/// Writes to stdout; a closed pipe (e.g. `| head`) ends the program quietly.
fn emit(out: &mut std::io::StdoutLock<'_>, bytes: &[u8]) {
    let result = out.write_all(bytes).and_then(|_| out.flush());
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            exit(0);
        }
        fail_on("stdout", e);
    }
}

fn main() {
    let o = parse_args();
    let file = &o.load;
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fail(&format!(
            "{file}: no such checkpoint; make one with `cargo run --release --example cascade` \
             (it trains a small model on the shipped corpus and writes target/cascade.ckpt)"
        )),
        Err(e) => fail_on(file, e),
    };
    let checkpoint = CheckpointView::new(&bytes).unwrap_or_else(|e| fail_on(file, e));
    if checkpoint.scalar_width() != 4 {
        fail(&format!("{file}: stores f64 parameters; this program runs f32 checkpoints"));
    }
    let shape = checkpoint.shape();
    // In place when the bytes are aligned for f32 (they are, from the allocator); else a copy.
    let copy: Vec<f32>;
    let params = match checkpoint.params::<f32>() {
        Ok(p) => p,
        Err(_) => {
            let mut c = vec![0.0f32; checkpoint.param_count()];
            checkpoint.copy_params(&mut c).unwrap_or_else(|e| fail_on(file, e));
            copy = c;
            &copy
        }
    };
    let view = ModelView::new(shape, params).unwrap_or_else(|e| fail_on(file, e));
    let context = shape.context_len;
    let prompt = o.prompt.as_bytes();
    if prompt.len() > context {
        usage_error(&format!("--prompt: {}", Error::ContextOverflow { context, tokens: prompt.len() }));
    }
    let mut sampler = Sampler::new(o.temperature, o.top_k, o.top_p, o.seed)
        .unwrap_or_else(|e| usage_error(&format!("sampler flags: {e}")));
    let state_elems = state_len(&shape).unwrap_or_else(|e| fail_on(file, e));
    let mut state = vec![0.0f32; state_elems];
    let mut workspace = vec![0.0f32; workspace_len(&shape, context).unwrap_or_else(|e| fail_on(file, e))];
    let state = DecoderState::new(&shape, &mut state).unwrap_or_else(|e| fail_on(file, e));
    let mut decoder = Decoder::new(view, state, &mut workspace).unwrap_or_else(|e| fail_on(file, e));

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    emit(&mut out, prompt);
    let mut text: Vec<u8> = prompt.to_vec();
    let start = Instant::now();
    let mut logits = decoder.prefill(prompt).unwrap_or_else(|e| fail_on("prefill", e)).to_vec();
    let prefill_seconds = start.elapsed().as_secs_f64();
    let (mut steps, mut refills) = (0usize, 0usize);
    for _ in 0..o.bytes {
        let token = sampler.sample(&logits).unwrap_or_else(|e| fail_on("sampling", e));
        emit(&mut out, &[token as u8]);
        text.push(token as u8);
        match decoder.step(token) {
            Ok(l) => logits.copy_from_slice(l),
            Err(Error::ContextOverflow { .. }) => {
                // Full: continue from the last half of the context (which ends with `token`).
                let keep = &text[text.len() - (context / 2).max(1)..];
                let l = decoder.prefill(keep).unwrap_or_else(|e| fail_on("prefill", e));
                logits.copy_from_slice(l);
                refills += 1;
            }
            Err(e) => fail_on("step", e),
        }
        steps += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    emit(&mut out, b"\n");
    eprintln!(
        "\n{} bytes in {:.3} s: {:.0} tokens/s (prompt of {} bytes prefilled in {:.3} ms; {} context refill{})",
        steps,
        seconds,
        steps as f64 / seconds.max(1e-9),
        prompt.len(),
        prefill_seconds * 1e3,
        refills,
        if refills == 1 { "" } else { "s" }
    );
    eprintln!("decoder state (f32), context {context}:");
    for (l, kind) in shape.layers.iter().enumerate() {
        let name = match kind {
            AttentionKind::Softmax => "softmax: K/V cache".to_string(),
            AttentionKind::Sd { routing_rank, filtering_rank } => {
                format!("S-D (r {routing_rank}, q {filtering_rank}): [a|b|c] features + values")
            }
            AttentionKind::Linear => "linear: recurrent (S, z)".to_string(),
            AttentionKind::LinearQk { qk_width } => {
                format!("linear (query/key width {qk_width}): recurrent (S, z)")
            }
        };
        eprintln!("  layer {}: {:>8} bytes  {name}", l + 1, layer_state_bytes::<f32>(&shape, kind));
    }
    eprintln!("  total:   {:>8} bytes", state_elems * 4);
}
