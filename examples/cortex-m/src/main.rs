//! sd-attention on a bare-metal Cortex-M4F (thumbv7em-none-eabihf), run under QEMU (MPS2-AN386).
//!
//! No allocator, no `alloc` crate: every buffer is a fixed-size array on the stack. Each part runs
//! in its own `#[inline(never)]` function and prints its results as `SDA <section> <name> <values>`
//! lines through semihosting (format in `inputs.rs`), followed by its peak stack use, measured by
//! painting the free stack before the part and finding the lowest overwritten word after it. The
//! run ends with `SDA end ok` and a zero exit status, or `SDA end fail` / `SDA panic` and a nonzero
//! one (QEMU's exit status).
//!
//! Parts: the routing/filtering split, matrix-free products and effective ranks of a fixed head;
//! (a) an S-D head forward on a fixed sequence (`sd_attention::attention::sd`); (b) recurrent ELU+1
//! linear attention, one token at a time (`sd_attention::attention::linear::State`); (c) Lanczos
//! singular values of the fixed head's routing part and their effective ranks
//! (`sd_attention::spectral::spectrum`). Each is one `#[inline(never)] fn <section>_part(...) -> Result<Report,
//! Error>` on fixed-size arrays (workspace lengths as constants, checked against the kernel's
//! `*_workspace_len` so a mismatch is an error, not an overflow), one `report_<section>` printing
//! `SDA <section> <name> <values>`, and one `run(...)` line; the host test has the matching
//! `check_<section>`.

#![no_std]
#![no_main]

mod inputs;

use core::arch::asm;
use core::fmt::Write;
use core::panic::PanicInfo;

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hio};
use sd_attention::attention::linear::State;
use sd_attention::attention::sd::AttentionHead;
use sd_attention::attention::softmax::{forward_flops, TILE_K, TILE_Q};
use sd_attention::attention::Causality;
use sd_attention::spectral::erank::{default_rank_tolerance, effective_ranks, EffectiveRanks};
use sd_attention::spectral::factored::{FactoredKernel, Part};
use sd_attention::spectral::spectrum::{
    head_spectrum_steps, head_values_workspace_len, routing_singular_values,
};
use sd_attention::split::{energies, split, Energies};
use sd_attention::{linalg::dense, Error};

use inputs::{
    fingerprint, head_inputs, sequence_fingerprint, sequence_inputs, HeadInputs, SequenceInputs, D_HEAD, D_K,
    D_MODEL, D_V, KNOWN_SPECTRUM, N_TOKENS, RANK_FILTERING, RANK_ROUTING, SD_PARAM_LEN, TAG,
};

// ---------------------------------------------------------------------------------------------
// Output: one line per result, assembled in a fixed buffer and written with one semihosting call.

/// A line of at most `LINE_CAPACITY` bytes (longer output is cut, and the run fails): room for 64
/// values, e.g. the `N_TOKENS x D_V` outputs of the parts to come.
const LINE_CAPACITY: usize = 1024;

struct Line {
    bytes: [u8; LINE_CAPACITY],
    len: usize,
    overflowed: bool,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = LINE_CAPACITY - self.len;
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.overflowed = true;
        }
        Ok(())
    }
}

/// Writes `SDA <section> <name>` followed by what `values` writes, as one line; `false` if anything
/// failed. Reports combine these with `&`, not `&&`, so that every line is printed after a failure.
fn emit(section: &str, name: &str, values: impl FnOnce(&mut Line) -> core::fmt::Result) -> bool {
    let mut line = Line { bytes: [0; LINE_CAPACITY], len: 0, overflowed: false };
    let ok = write!(line, "{TAG} {section} {name}").is_ok() && values(&mut line).is_ok();
    let ok = ok && line.write_str("\n").is_ok() && !line.overflowed;
    match hio::hstdout() {
        Ok(mut out) => out.write_all(&line.bytes[..line.len]).is_ok() && ok,
        Err(()) => false,
    }
}

/// ` v0 v1 ...` with `{:e}`: the shortest decimal that reads back as the same `f32`.
fn floats<'a>(values: &'a [f32]) -> impl FnOnce(&mut Line) -> core::fmt::Result + 'a {
    move |line| values.iter().try_for_each(|v| write!(line, " {v:e}"))
}

// ---------------------------------------------------------------------------------------------
// Stack measurement by painting.

/// The pattern painted over free stack.
const PAINT: u32 = 0x5DA5_5DA5;
/// How far below the current stack pointer is painted (and so the largest use that can be seen;
/// a part that reaches the bottom fails the run). The S-D forward alone takes about 260 KiB.
const STACK_WINDOW: usize = 1024 * 1024;
/// Bytes left unpainted just below the painting function's own stack pointer.
const PAINT_MARGIN: usize = 16;

extern "C" {
    /// End of `.bss`/`.uninit` (start of the unused RAM), from cortex-m-rt's `link.x`.
    static __sheap: u32;
    /// Initial stack pointer (top of RAM), from cortex-m-rt's `link.x`.
    static _stack_start: u32;
}

#[inline(always)]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads the stack pointer register into a general register; no memory is touched.
    unsafe { asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// Lowest address painted: `STACK_WINDOW` below `sp`, but never into the statics.
fn paint_bottom(sp: usize) -> usize {
    let statics_end = core::ptr::addr_of!(__sheap) as usize;
    sp.saturating_sub(STACK_WINDOW).max(statics_end).next_multiple_of(4)
}

struct StackMeter {
    /// Bottom of the painted window.
    bottom: usize,
    /// Lowest address found overwritten so far, over the whole run.
    lowest: usize,
}

impl StackMeter {
    /// Paints `[bottom, sp - PAINT_MARGIN)` below this function's own frame.
    #[inline(never)]
    fn paint(&mut self) {
        let sp = stack_pointer();
        let bottom = paint_bottom(sp);
        let top = (sp - PAINT_MARGIN) & !3;
        let mut address = bottom;
        while address < top {
            // SAFETY: `[bottom, top)` lies below the stack pointer of this function, where no live
            // object exists (the stack grows down, no interrupt is enabled, and every caller's frame
            // is above `sp`), and above `__sheap`, the end of every static: the words written belong
            // to no one. They are word-aligned (both ends rounded to multiples of 4) and inside RAM.
            unsafe { (address as *mut u32).write_volatile(PAINT) };
            address += 4;
        }
        self.bottom = bottom;
    }

    /// The lowest word that no longer holds the paint (the deepest the stack reached since
    /// [`StackMeter::paint`]), also folded into the run's record.
    #[inline(never)]
    fn lowest_touched(&mut self) -> usize {
        let mut address = self.bottom;
        // SAFETY: reads words of the painted window (see `paint`), which lie below this function's
        // frame; they are aligned and in RAM. Reading a word another frame may later reuse is fine.
        while address < stack_pointer() && unsafe { (address as *const u32).read_volatile() } == PAINT {
            address += 4;
        }
        self.lowest = self.lowest.min(address);
        address
    }

    /// Runs `part` on freshly painted stack; returns its result and the bytes of stack it used below
    /// the caller's stack pointer (its own frame and everything it calls; resolution about
    /// `PAINT_MARGIN` plus the painting frame, a few tens of bytes).
    #[inline(never)]
    fn measure<R>(&mut self, part: impl FnOnce() -> R) -> (R, usize) {
        self.lowest_touched();
        self.paint();
        let sp = stack_pointer();
        let result = part();
        let lowest = self.lowest_touched();
        (result, sp - lowest)
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: the routing/filtering split of the fixed head (`docs/math.md` section 1).

struct SplitReport {
    /// `||S||^2`, `||D||^2` of the dense `M = W_Q W_K^T` (`split::energies`).
    dense: Energies<f32>,
    /// The same from the factors (`FactoredKernel::energies`), never forming `M`.
    factored: Energies<f32>,
    /// `max |S_ij + S_ji|` and `max |D_ij - D_ji|` of `split::split` (exactly 0 by construction).
    skew_defect: f32,
    sym_defect: f32,
}

#[inline(never)]
fn split_part(inputs: &HeadInputs) -> Result<SplitReport, Error> {
    let head = FactoredKernel::new(D_MODEL, D_HEAD, &inputs.w_q, &inputs.w_k)?;
    let mut kernel = [0.0f32; D_MODEL * D_MODEL];
    head.to_dense(Part::Kernel, &mut kernel)?;
    let (mut routing, mut filtering) = ([0.0f32; D_MODEL * D_MODEL], [0.0f32; D_MODEL * D_MODEL]);
    split(D_MODEL, &kernel, &mut routing, &mut filtering)?;
    let (mut skew_defect, mut sym_defect) = (0.0f32, 0.0f32);
    for i in 0..D_MODEL {
        for j in 0..D_MODEL {
            skew_defect = skew_defect.max((routing[i * D_MODEL + j] + routing[j * D_MODEL + i]).abs());
            sym_defect = sym_defect.max((filtering[i * D_MODEL + j] - filtering[j * D_MODEL + i]).abs());
        }
    }
    let mut workspace = [0.0f32; 2 * D_HEAD * D_HEAD];
    let factored = head.energies(&mut workspace)?;
    Ok(SplitReport { dense: energies(D_MODEL, &kernel)?, factored, skew_defect, sym_defect })
}

fn report_split(r: &SplitReport) -> bool {
    let (d, h) = (D_MODEL as u64, D_HEAD as u64);
    // Floating-point operations (a multiply-add counts 2): to_dense 2 d^2 h; split: a subtraction,
    // an addition and two halvings per pair i < j; dense energies: 6 per pair and 2 per diagonal
    // entry; factored energies: three d_head x d x d_head products and two d_head^2 reductions.
    let pairs = d * (d - 1) / 2;
    let flops = 2 * d * d * h + 4 * pairs + (6 * pairs + 2 * d) + (3 * 2 * d * h * h + 4 * h * h);
    emit("split", "energy_dense", floats(&[r.dense.routing, r.dense.filtering]))
        & emit("split", "energy_factored", floats(&[r.factored.routing, r.factored.filtering]))
        & emit("split", "rho_dense", floats(&[r.dense.routing_fraction()]))
        & emit("split", "rho_factored", floats(&[r.factored.routing_fraction()]))
        & emit("split", "symmetry_defect", floats(&[r.skew_defect, r.sym_defect]))
        & emit("split", "flops", |l| write!(l, " {flops}"))
        & (r.skew_defect == 0.0 && r.sym_defect == 0.0)
}

// ---------------------------------------------------------------------------------------------
// Part 2: matrix-free products with the routing and filtering parts (`docs/math.md` section 1).

struct RoutingReport {
    /// `S x` from the factors.
    routing_x: [f32; D_MODEL],
    /// `D x` from the factors.
    filtering_x: [f32; D_MODEL],
    /// `x^T S x` (zero in exact arithmetic: routing is antisymmetric).
    x_routing_x: f32,
}

#[inline(never)]
fn routing_part(inputs: &HeadInputs) -> Result<RoutingReport, Error> {
    let head = FactoredKernel::new(D_MODEL, D_HEAD, &inputs.w_q, &inputs.w_k)?;
    let mut workspace = [0.0f32; 2 * D_HEAD];
    let (mut routing_x, mut filtering_x) = ([0.0f32; D_MODEL], [0.0f32; D_MODEL]);
    head.apply(Part::Routing, &inputs.x, &mut routing_x, &mut workspace)?;
    head.apply(Part::Filtering, &inputs.x, &mut filtering_x, &mut workspace)?;
    let x_routing_x = dense::dot(&inputs.x, &routing_x)?;
    Ok(RoutingReport { routing_x, filtering_x, x_routing_x })
}

fn report_routing(r: &RoutingReport) -> bool {
    let (d, h) = (D_MODEL as u64, D_HEAD as u64);
    // Per product: W_K^T x and W_Q^T x (2 d h each), W_Q u and W_K w (2 d h each), d subtractions
    // (or additions) and d halvings; then x^T S x, 2 d.
    let flops = 2 * (8 * d * h + 2 * d) + 2 * d;
    emit("routing", "routing_x", floats(&r.routing_x))
        & emit("routing", "filtering_x", floats(&r.filtering_x))
        & emit("routing", "x_routing_x", floats(&[r.x_routing_x]))
        & emit("routing", "flops", |l| write!(l, " {flops}"))
}

// ---------------------------------------------------------------------------------------------
// Part 3: effective ranks of a known spectrum (`docs/math.md` section 2).

#[inline(never)]
fn erank_part() -> Result<EffectiveRanks<f32>, Error> {
    let n = KNOWN_SPECTRUM.len();
    effective_ranks(&KNOWN_SPECTRUM, default_rank_tolerance::<f32>(n, n))
}

fn report_erank(r: &EffectiveRanks<f32>) -> bool {
    emit("erank", "known_spectrum", floats(&[r.entropy, r.participation_ratio, r.stable]))
        & emit("erank", "numerical_rank", |l| write!(l, " {}", r.numerical))
}

// ---------------------------------------------------------------------------------------------
// Part 4: S-D head forward on a fixed sequence (`docs/math.md` section 5).

/// Width `2r + q` of the S-D head's projected queries and keys.
const SD_QK_WIDTH: usize = 2 * RANK_ROUTING + RANK_FILTERING;
/// Workspace of `AttentionHead::forward` for `N_TOKENS` tokens, as its documentation gives it:
/// projections `n (3 w + d_v)` (S-D) plus the softmax forward's workspace, whose tiles shrink to
/// the sequence: `tq (tk + 3 + w) + n w` with `tq = min(TILE_Q, n)`, `tk = min(TILE_K, n)`.
/// Checked against `forward_workspace_len` at run time (a mismatch is an error).
const SD_FORWARD_WORKSPACE: usize = N_TOKENS * (3 * SD_QK_WIDTH + D_V)
    + min(TILE_Q, N_TOKENS) * (min(TILE_K, N_TOKENS) + 3 + SD_QK_WIDTH)
    + N_TOKENS * SD_QK_WIDTH;

/// `min` usable in constants.
const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

struct SdForwardReport {
    /// `softmax_row(Qh Kh^T scale + causal mask) X W_V`, `N_TOKENS x D_V`.
    out: [f32; N_TOKENS * D_V],
    /// Per-row log-sum-exp of the logits.
    lse: [f32; N_TOKENS],
    /// Workspace elements the kernel asked for.
    workspace: usize,
}

#[inline(never)]
fn sd_forward_part(sequence: &SequenceInputs) -> Result<SdForwardReport, Error> {
    let head = AttentionHead::<f32>::routing_filtering(
        D_MODEL,
        RANK_ROUTING,
        RANK_FILTERING,
        D_V,
        Causality::Causal,
    );
    if head.param_len() != SD_PARAM_LEN {
        return Err(Error::ShapeMismatch {
            what: "sd_params",
            expected: head.param_len(),
            got: SD_PARAM_LEN,
        });
    }
    let needed = head.forward_workspace_len(N_TOKENS);
    if needed != SD_FORWARD_WORKSPACE {
        return Err(Error::WorkspaceTooSmall { needed, got: SD_FORWARD_WORKSPACE });
    }
    let mut workspace = [0.0f32; SD_FORWARD_WORKSPACE];
    let mut report = SdForwardReport { out: [0.0; N_TOKENS * D_V], lse: [0.0; N_TOKENS], workspace: needed };
    head.forward(
        N_TOKENS,
        &sequence.x,
        &sequence.sd_params,
        &mut report.out,
        &mut report.lse,
        &mut workspace,
    )?;
    Ok(report)
}

fn report_sd_forward(r: &SdForwardReport) -> bool {
    // Projections X U, X V, X C, X W_V (2 n d_model each column), then the softmax head's own count
    // (logits and P V over the n (n + 1) / 2 visible pairs).
    let (n, d) = (N_TOKENS as u64, D_MODEL as u64);
    let flops =
        2 * n * d * (SD_QK_WIDTH + D_V) as u64 + forward_flops(N_TOKENS, SD_QK_WIDTH, D_V, Causality::Causal);
    emit("sd_forward", "out", floats(&r.out))
        & emit("sd_forward", "lse", floats(&r.lse))
        & emit("sd_forward", "workspace", |l| write!(l, " {}", r.workspace))
        & emit("sd_forward", "flops", |l| write!(l, " {flops}"))
}

// ---------------------------------------------------------------------------------------------
// Part 5: ELU+1 linear attention, recurrent, one token at a time (`docs/math.md` section 6).

/// `eps` of the denominator `phi(q)^T z + eps` (the default of `docs/math.md` section 6).
const LINEAR_EPS: f32 = 1e-6;

struct LinearStreamReport {
    /// Output of each token as it arrives, `N_TOKENS x D_V`.
    out: [f32; N_TOKENS * D_V],
    /// Bytes of the state after the stream: `S` (`D_K x D_V`) and `z` (`D_K`).
    state_bytes: usize,
}

#[inline(never)]
fn linear_stream_part(sequence: &SequenceInputs) -> Result<LinearStreamReport, Error> {
    // The whole state of the stream: nothing else survives from one token to the next.
    let (mut s, mut z) = ([0.0f32; D_K * D_V], [0.0f32; D_K]);
    let state_bytes = core::mem::size_of_val(&s) + core::mem::size_of_val(&z);
    let mut state = State::new(D_K, D_V, &mut s, &mut z)?;
    let mut out = [0.0f32; N_TOKENS * D_V];
    for t in 0..N_TOKENS {
        let (q, k) = (&sequence.q[t * D_K..(t + 1) * D_K], &sequence.k[t * D_K..(t + 1) * D_K]);
        let v = &sequence.v[t * D_V..(t + 1) * D_V];
        state.step(q, k, v, LINEAR_EPS, &mut out[t * D_V..(t + 1) * D_V])?;
    }
    Ok(LinearStreamReport { out, state_bytes })
}

fn report_linear_stream(r: &LinearStreamReport) -> bool {
    // Per token (State::step): 4 d_k d_v + 4 d_k, and d_v divisions (phi not counted).
    let flops = (N_TOKENS * (4 * D_K * D_V + 4 * D_K + D_V)) as u64;
    emit("linear_stream", "out", floats(&r.out))
        & emit("linear_stream", "state_bytes", |l| write!(l, " {}", r.state_bytes))
        & emit("linear_stream", "flops", |l| write!(l, " {flops}"))
}

// ---------------------------------------------------------------------------------------------
// Part 6: Lanczos singular values of the fixed head's routing part and their erank (`docs/math.md` sections 2, 3).

/// `head_spectrum_steps(D_MODEL, D_HEAD) = min(d_model, 2 d_head + 8)`.
const SPECTRUM_STEPS: usize = if D_MODEL < 2 * D_HEAD + 8 { D_MODEL } else { 2 * D_HEAD + 8 };
/// `head_values_workspace_len(D_MODEL, D_HEAD)`: the Lanczos basis and tridiagonal for
/// `SPECTRUM_STEPS = m` steps (`lanczos_workspace_len`: `(m + 1) d_model + 6 m`) plus `2 d_head` for
/// the products. Checked at run
/// time.
const SPECTRUM_WORKSPACE: usize = (SPECTRUM_STEPS + 1) * D_MODEL + 6 * SPECTRUM_STEPS + 2 * D_HEAD;

struct RoutingSpectrumReport {
    /// Singular values of `S`, descending, `sigma[..steps]` (the other `D_MODEL - steps` are zero).
    sigma: [f32; SPECTRUM_STEPS],
    steps: usize,
    inferred_zeros: usize,
    ranks: EffectiveRanks<f32>,
}

#[inline(never)]
fn routing_spectrum_part(inputs: &HeadInputs) -> Result<RoutingSpectrumReport, Error> {
    let head = FactoredKernel::new(D_MODEL, D_HEAD, &inputs.w_q, &inputs.w_k)?;
    let steps_needed = head_spectrum_steps(D_MODEL, D_HEAD);
    if steps_needed != SPECTRUM_STEPS {
        return Err(Error::ShapeMismatch { what: "sigma", expected: steps_needed, got: SPECTRUM_STEPS });
    }
    let needed = head_values_workspace_len(D_MODEL, D_HEAD);
    if needed != SPECTRUM_WORKSPACE {
        return Err(Error::WorkspaceTooSmall { needed, got: SPECTRUM_WORKSPACE });
    }
    let mut workspace = [0.0f32; SPECTRUM_WORKSPACE];
    let mut sigma = [0.0f32; SPECTRUM_STEPS];
    let info = routing_singular_values(&head, &mut sigma, &mut workspace)?;
    let ranks = effective_ranks(&sigma[..info.steps], default_rank_tolerance::<f32>(D_MODEL, D_MODEL))?;
    Ok(RoutingSpectrumReport { sigma, steps: info.steps, inferred_zeros: info.inferred_zeros, ranks })
}

fn report_routing_spectrum(r: &RoutingSpectrumReport) -> bool {
    let ranks = &r.ranks;
    emit("routing_spectrum", "sigma", floats(&r.sigma[..r.steps]))
        & emit("routing_spectrum", "steps", |l| write!(l, " {} {}", r.steps, r.inferred_zeros))
        & emit("routing_spectrum", "erank", floats(&[ranks.entropy, ranks.participation_ratio, ranks.stable]))
        & emit("routing_spectrum", "numerical_rank", |l| write!(l, " {}", ranks.numerical))
        & emit("routing_spectrum", "workspace", |l| write!(l, " {SPECTRUM_WORKSPACE}"))
}

// ---------------------------------------------------------------------------------------------
// Driver.

/// Prints `SDA error <section> <error>` for a part that returned an error.
fn report_error(section: &str, error: &Error) -> bool {
    emit("error", section, |l| write!(l, " {error:?}"));
    false
}

fn report_stack(section: &str, bytes: usize) -> bool {
    emit("stack", section, |l| write!(l, " {bytes}")) & (bytes + 2 * PAINT_MARGIN < STACK_WINDOW)
}

/// Runs one part under the stack meter and reports its results (or its error) and its stack use.
fn run<R>(
    meter: &mut StackMeter,
    section: &str,
    part: impl FnOnce() -> Result<R, Error>,
    report: impl FnOnce(&R) -> bool,
) -> bool {
    let (result, stack) = meter.measure(part);
    let ok = match &result {
        Ok(value) => report(value),
        Err(error) => report_error(section, error),
    };
    report_stack(section, stack) & ok
}

#[entry]
fn main() -> ! {
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut meter = StackMeter { bottom: top, lowest: top };
    meter.paint();
    let inputs = head_inputs();
    let sequence = sequence_inputs();
    let mut ok = emit("begin", "v1", |_| Ok(()));
    ok &= emit("input", "fingerprint", |l| write!(l, " {:016x}", fingerprint(&inputs)));
    ok &= emit("input", "sequence_fingerprint", |l| write!(l, " {:016x}", sequence_fingerprint(&sequence)));
    ok &= emit("input", "dims", |l| write!(l, " {D_MODEL} {D_HEAD}"));

    ok &= run(&mut meter, "split", || split_part(&inputs), report_split);
    ok &= run(&mut meter, "routing", || routing_part(&inputs), report_routing);
    ok &= run(&mut meter, "erank", erank_part, report_erank);
    ok &= run(&mut meter, "sd_forward", || sd_forward_part(&sequence), report_sd_forward);
    ok &= run(&mut meter, "linear_stream", || linear_stream_part(&sequence), report_linear_stream);
    ok &= run(&mut meter, "routing_spectrum", || routing_spectrum_part(&inputs), report_routing_spectrum);

    // Deepest stack of the whole run below the reset stack pointer (includes `main` and printing).
    meter.lowest_touched();
    ok &= report_stack("total", top - meter.lowest);
    // No global allocator exists in this program (and `alloc` is not even compiled).
    ok &= emit("heap", "total", |l| write!(l, " 0"));
    emit("end", if ok { "ok" } else { "fail" }, |_| Ok(()));
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    emit("panic", "message", |l| write!(l, " {info}"));
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
