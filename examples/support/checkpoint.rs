//! Reads the query/key projections of a safetensors checkpoint and runs the head census on them.
//! Shared by examples/census.rs and tests/census.rs (included by `#[path]`).
//!
//! Layouts (tensor names may carry a prefix such as `bert.` or `transformer.`):
//! * BERT-style: `...layer.{L}.attention.self.query.weight` and `...key.weight`, PyTorch
//!   `nn.Linear` weights stored `[out, in] = [heads d_head, d_model]`.
//! * GPT-2-style: `...h.{L}.attn.c_attn.weight`, a `Conv1D` weight stored `[in, out] =
//!   [d_model, 3 heads d_head]`, the columns holding `Q | K | V`.
//!
//! Head `h` of `heads` takes features `h d_head .. (h+1) d_head` of the query and key outputs; its
//! factors `W_Q, W_K` are `d_model x d_head` (row-major), so that `M = W_Q W_K^T`.
#![allow(dead_code)]

use safetensors::{Dtype, SafeTensors};
use sd_attention::spectral::factored::FactoredKernel;
use sd_attention::spectral::spectrum::{
    head_spectrum, head_spectrum_lanczos, head_spectrum_lanczos_workspace_len, head_spectrum_workspace_len,
    HeadSpectrum,
};

/// How the census computes a head's spectra.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Thin QR of `[W_Q W_K]` plus the cores of order `2 d_head` (`spectral::exact`, the default).
    Exact,
    /// Matrix-free Lanczos on `S` and `D` (`spectral::spectrum::head_spectrum_lanczos`).
    Lanczos,
}

/// Which naming and storage convention a checkpoint follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `nn.Linear` query and key weights, `[out, in]`.
    Bert,
    /// `Conv1D` fused `c_attn`, `[in, 3 out]`.
    Gpt2,
}

/// The query and key projections of one layer, as `d_model x width` row-major f64 matrices
/// (`x W` with row vectors `x`), `width = heads d_head`.
pub struct LayerQk {
    pub layer: usize,
    pub d_model: usize,
    pub width: usize,
    pub w_query: Vec<f64>,
    pub w_key: Vec<f64>,
}

/// A 2-D tensor as (rows, cols, f64 values); F32 and F64 only.
fn read_matrix(tensors: &SafeTensors, name: &str) -> Result<(usize, usize, Vec<f64>), String> {
    let view = tensors.tensor(name).map_err(|e| format!("{name}: {e}"))?;
    if view.shape().len() != 2 {
        return Err(format!("{name}: expected a 2-D tensor, got shape {:?}", view.shape()));
    }
    let values: Vec<f64> = match view.dtype() {
        Dtype::F32 => {
            view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect()
        }
        Dtype::F64 => view
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        other => return Err(format!("{name}: dtype {other:?} not supported (F32 or F64)")),
    };
    Ok((view.shape()[0], view.shape()[1], values))
}

/// The layer index in a name such as `encoder.layer.3.attention.self.query.weight` (`marker` =
/// `layer.`) or `h.3.attn.c_attn.weight` (`marker` = `h.`): the number after the last `marker`
/// that starts a dot-separated segment of `head`.
fn layer_index(head: &str, marker: &str) -> Option<usize> {
    let start =
        if head.starts_with(marker) { Some(0) } else { head.rfind(&format!(".{marker}")).map(|i| i + 1) }?;
    head[start + marker.len()..].parse().ok()
}

/// Suffix of a BERT-style query projection (the key's is the same with `key`).
const BERT_Q: &str = ".attention.self.query.weight";
/// Suffix of the key projection that goes with [`BERT_Q`].
const BERT_K: &str = ".attention.self.key.weight";
/// Suffix of a GPT-2-style fused query/key/value projection.
const GPT2: &str = ".attn.c_attn.weight";

/// Whether the census reads the tensor `name` (a query, key or fused attention projection).
fn census_reads(name: &str) -> bool {
    name.ends_with(BERT_Q) || name.ends_with(BERT_K) || name.ends_with(GPT2)
}

/// The bytes of the safetensors file at `path` as the census needs them: the header and the
/// attention projections are read from the file, every other tensor's bytes are left zero (in a
/// zero-filled buffer whose pages the system maps lazily, so that the rest of a large checkpoint
/// is neither read nor touched). The result parses with [`SafeTensors::deserialize`] and gives
/// [`read_layers`] the same projections as the whole file would.
pub fn read_census_bytes(path: &str) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let len = usize::try_from(len).map_err(|_| format!("{len} bytes do not fit in memory"))?;
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).map_err(|e| format!("not a safetensors file: {e}"))?;
    let header_end = usize::try_from(u64::from_le_bytes(prefix))
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= len)
        .ok_or_else(|| format!("not a safetensors file: header length beyond the {len} bytes of the file"))?;
    let mut bytes = vec![0u8; len];
    bytes[..8].copy_from_slice(&prefix);
    file.read_exact(&mut bytes[8..header_end]).map_err(|e| e.to_string())?;
    let (_, metadata) =
        SafeTensors::read_metadata(&bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    // The projections in file order, so that the reads move forward through the file.
    let mut ranges: Vec<(usize, usize)> = metadata
        .tensors()
        .into_iter()
        .filter(|(name, _)| census_reads(name))
        .map(|(_, info)| (header_end + info.data_offsets.0, header_end + info.data_offsets.1))
        .collect();
    ranges.sort_unstable();
    for (start, end) in ranges {
        file.seek(SeekFrom::Start(start as u64)).map_err(|e| e.to_string())?;
        file.read_exact(&mut bytes[start..end]).map_err(|e| e.to_string())?;
    }
    Ok(bytes)
}

/// Finds the layout and reads every layer's query and key projections, in layer order.
pub fn read_layers(tensors: &SafeTensors) -> Result<(Layout, Vec<LayerQk>), String> {
    let mut bert: Vec<(usize, String)> = Vec::new();
    let mut gpt2: Vec<(usize, String)> = Vec::new();
    for name in tensors.names() {
        if let Some(head) = name.strip_suffix(BERT_Q) {
            if let Some(layer) = layer_index(head, "layer.") {
                bert.push((layer, name.to_string()));
            }
        } else if let Some(head) = name.strip_suffix(GPT2) {
            if let Some(layer) = layer_index(head, "h.") {
                gpt2.push((layer, name.to_string()));
            }
        }
    }
    bert.sort();
    gpt2.sort();
    let mut layers = Vec::new();
    if !bert.is_empty() {
        for (layer, query_name) in bert {
            let key_name = format!("{}{BERT_K}", &query_name[..query_name.len() - BERT_Q.len()]);
            let (out, d_model, query) = read_matrix(tensors, &query_name)?;
            let (key_out, key_in, key) = read_matrix(tensors, &key_name)?;
            if (key_out, key_in) != (out, d_model) {
                return Err(format!(
                    "{key_name}: shape [{key_out}, {key_in}] differs from the query's [{out}, {d_model}]"
                ));
            }
            // [out, in] -> d_model x out.
            let transpose = |w: &[f64]| {
                let mut t = vec![0.0; w.len()];
                for o in 0..out {
                    for i in 0..d_model {
                        t[i * out + o] = w[o * d_model + i];
                    }
                }
                t
            };
            layers.push(LayerQk {
                layer,
                d_model,
                width: out,
                w_query: transpose(&query),
                w_key: transpose(&key),
            });
        }
        Ok((Layout::Bert, layers))
    } else if !gpt2.is_empty() {
        for (layer, name) in gpt2 {
            let (d_model, fused, w) = read_matrix(tensors, &name)?;
            if fused % 3 != 0 {
                return Err(format!("{name}: {fused} columns do not split into Q | K | V"));
            }
            let width = fused / 3;
            let columns = |first: usize| {
                let mut out = vec![0.0; d_model * width];
                for i in 0..d_model {
                    out[i * width..(i + 1) * width]
                        .copy_from_slice(&w[i * fused + first..i * fused + first + width]);
                }
                out
            };
            layers.push(LayerQk { layer, d_model, width, w_query: columns(0), w_key: columns(width) });
        }
        Ok((Layout::Gpt2, layers))
    } else {
        Err("no BERT-style (layer.N.attention.self.query.weight) or GPT-2-style (h.N.attn.c_attn.weight) \
             attention tensors found"
            .into())
    }
}

/// Head `head` of `heads`: the `d_model x d_head` factors (columns `head d_head ..` of the layer's
/// projections).
pub fn head_factors(layer: &LayerQk, heads: usize, head: usize) -> (Vec<f64>, Vec<f64>) {
    let d_head = layer.width / heads;
    let pick = |w: &[f64]| {
        let mut f = vec![0.0; layer.d_model * d_head];
        for i in 0..layer.d_model {
            let row = i * layer.width + head * d_head;
            f[i * d_head..(i + 1) * d_head].copy_from_slice(&w[row..row + d_head]);
        }
        f
    };
    (pick(&layer.w_query), pick(&layer.w_key))
}

/// One head of the census.
#[derive(Debug)]
pub struct HeadRow {
    pub layer: usize,
    pub head: usize,
    pub d_model: usize,
    pub d_head: usize,
    pub spectrum: HeadSpectrum<f64>,
}

/// Runs [`head_spectrum`] (f64, exact spectra from the factors) on every head of every layer.
pub fn census(bytes: &[u8], heads: usize) -> Result<(Layout, Vec<HeadRow>), String> {
    census_with(bytes, heads, Method::Exact)
}

/// [`census`] by the chosen method.
pub fn census_with(bytes: &[u8], heads: usize, method: Method) -> Result<(Layout, Vec<HeadRow>), String> {
    let (layout, layers) = parse_layers(bytes)?;
    Ok((layout, census_layers(&layers, heads, method)?))
}

/// Parses a safetensors file and reads its layers' query and key projections ([`read_layers`]).
pub fn parse_layers(bytes: &[u8]) -> Result<(Layout, Vec<LayerQk>), String> {
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| format!("not a safetensors file: {e}"))?;
    read_layers(&tensors)
}

/// The census of layers already read: every head of every layer by the chosen method.
pub fn census_layers(layers: &[LayerQk], heads: usize, method: Method) -> Result<Vec<HeadRow>, String> {
    let mut rows = Vec::new();
    for layer in layers {
        if heads == 0 || layer.width % heads != 0 {
            return Err(format!(
                "layer {}: {} features do not split into {heads} heads",
                layer.layer, layer.width
            ));
        }
        let d_head = layer.width / heads;
        let len = match method {
            Method::Exact => head_spectrum_workspace_len(layer.d_model, d_head),
            Method::Lanczos => head_spectrum_lanczos_workspace_len(layer.d_model, d_head),
        };
        // One head, with its own workspace (the heads are independent: with the `parallel`
        // feature they run as rayon tasks, and the rows come back in head order).
        let one = |head: usize| -> Result<HeadRow, String> {
            let mut workspace = vec![0.0; len];
            let (w_q, w_k) = head_factors(layer, heads, head);
            let kernel = FactoredKernel::new(layer.d_model, d_head, &w_q, &w_k).map_err(|e| e.to_string())?;
            let spectrum = match method {
                Method::Exact => head_spectrum(&kernel, &mut workspace),
                Method::Lanczos => head_spectrum_lanczos(&kernel, &mut workspace),
            }
            .map_err(|e| format!("layer {} head {head}: {e}", layer.layer))?;
            Ok(HeadRow { layer: layer.layer, head, d_model: layer.d_model, d_head, spectrum })
        };
        #[cfg(feature = "parallel")]
        let layer_rows: Result<Vec<HeadRow>, String> = {
            use rayon::prelude::*;
            (0..heads).into_par_iter().map(one).collect()
        };
        #[cfg(not(feature = "parallel"))]
        let layer_rows: Result<Vec<HeadRow>, String> = (0..heads).map(one).collect();
        rows.extend(layer_rows?);
    }
    Ok(rows)
}

/// Means over the heads of one layer.
#[derive(Debug)]
pub struct LayerSummary {
    pub layer: usize,
    pub heads: usize,
    pub rho: f64,
    pub erank_s: f64,
    pub erank_d: f64,
    /// Mean of erank(S) / capacity min(2 d_head, d_model).
    pub erank_s_fraction: f64,
    pub numerical_rank_s: f64,
    pub capacity: usize,
}

/// Per-layer means of the census rows (rows grouped by layer, as [`census`] returns them).
pub fn layer_summary(rows: &[HeadRow]) -> Vec<LayerSummary> {
    let mut out: Vec<LayerSummary> = Vec::new();
    for row in rows {
        let s = &row.spectrum;
        if out.last().map_or(true, |last| last.layer != row.layer) {
            out.push(LayerSummary {
                layer: row.layer,
                heads: 0,
                rho: 0.0,
                erank_s: 0.0,
                erank_d: 0.0,
                erank_s_fraction: 0.0,
                numerical_rank_s: 0.0,
                capacity: s.rank_bound,
            });
        }
        let last = out.last_mut().unwrap();
        last.heads += 1;
        last.rho += s.routing_fraction;
        last.erank_s += s.routing.entropy;
        last.erank_d += s.filtering.entropy;
        last.erank_s_fraction += s.routing.entropy / s.rank_bound.max(1) as f64;
        last.numerical_rank_s += s.routing.numerical as f64;
    }
    for l in out.iter_mut() {
        let n = l.heads as f64;
        l.rho /= n;
        l.erank_s /= n;
        l.erank_d /= n;
        l.erank_s_fraction /= n;
        l.numerical_rank_s /= n;
    }
    out
}
