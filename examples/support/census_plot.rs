//! The census plot, as hand-written SVG (no dependency): two panels over the layers, every head a
//! dot (spread a little within its layer by head index) and the layer means joined by lines.
//! Top: entropy effective rank of routing `S` (red) and filtering `D` (blue), with the capacity
//! `min(2 d_head, d_model)` as a dashed line. Bottom: the routing energy fraction `rho` (0..1).

use super::checkpoint::HeadRow;
use std::fmt::Write as _;

const RED: &str = "#d62728";
const BLUE: &str = "#1f77b4";
const GREEN: &str = "#2ca02c";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A step of 1, 2 or 5 times a power of ten giving about `ticks` intervals over `range`.
fn nice_step(range: f64, ticks: f64) -> f64 {
    let raw = (range / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let normalized = raw / magnitude;
    let factor = if normalized < 1.5 {
        1.0
    } else if normalized < 3.5 {
        2.0
    } else if normalized < 7.5 {
        5.0
    } else {
        10.0
    };
    factor * magnitude
}

/// One panel: its frame, y ticks, and a mapping from (layer position, value) to pixels.
struct Panel {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    y_max: f64,
    layers: usize,
}

impl Panel {
    fn x(&self, position: f64) -> f64 {
        self.left + (position + 0.5) / self.layers as f64 * self.width
    }
    fn y(&self, value: f64) -> f64 {
        self.top + self.height - value.clamp(0.0, self.y_max) / self.y_max * self.height
    }
    fn frame(&self, svg: &mut String, label: &str, step: f64, layer_names: &[usize]) {
        let mut value = 0.0;
        while value <= self.y_max + 1e-9 * step {
            let py = self.y(value);
            let _ = writeln!(
                svg,
                "<line x1=\"{:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#e0e0e0\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                self.left,
                self.left + self.width,
                self.left - 6.0,
                py + 4.0,
                if step < 1.0 { format!("{value:.1}") } else { format!("{value:.0}") }
            );
            value += step;
        }
        for (position, layer) in layer_names.iter().enumerate() {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{layer}</text>",
                self.x(position as f64),
                self.top + self.height + 16.0
            );
        }
        let _ = writeln!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 {:.1} {:.1})\">{}</text>",
            self.left,
            self.top,
            self.width,
            self.height,
            self.left - 44.0,
            self.top + self.height / 2.0,
            self.left - 44.0,
            self.top + self.height / 2.0,
            escape(label)
        );
    }
    /// Dots for every head and a line through the layer means.
    fn series(
        &self,
        svg: &mut String,
        rows: &[HeadRow],
        layer_names: &[usize],
        color: &str,
        value: impl Fn(&HeadRow) -> f64,
    ) {
        let heads = rows.iter().map(|r| r.head + 1).max().unwrap_or(1) as f64;
        let mut means = Vec::new();
        for (position, &layer) in layer_names.iter().enumerate() {
            let (mut sum, mut count) = (0.0, 0.0);
            for row in rows.iter().filter(|r| r.layer == layer) {
                let spread = (row.head as f64 + 0.5) / heads - 0.5; // -0.5..0.5
                let _ = writeln!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\" fill-opacity=\"0.55\"/>",
                    self.x(position as f64 + 0.6 * spread),
                    self.y(value(row))
                );
                sum += value(row);
                count += 1.0;
            }
            if count > 0.0 {
                means.push(format!("{:.1},{:.1}", self.x(position as f64), self.y(sum / count)));
            }
        }
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
            means.join(" ")
        );
    }
}

/// The SVG text of the census plot of `rows` (grouped by layer, as the census returns them).
pub fn census_svg(title: &str, rows: &[HeadRow]) -> String {
    let mut layer_names: Vec<usize> = rows.iter().map(|r| r.layer).collect();
    layer_names.dedup();
    let layers = layer_names.len().max(1);
    let (width, height) = (760.0, 620.0);
    let (left, plot_width) = (80.0, 520.0);
    let capacity = rows.iter().map(|r| r.spectrum.rank_bound).max().unwrap_or(1) as f64;
    let erank_max = rows
        .iter()
        .map(|r| r.spectrum.routing.entropy.max(r.spectrum.filtering.entropy))
        .fold(capacity, f64::max);
    let erank_step = nice_step(erank_max, 6.0);
    let erank_panel = Panel {
        left,
        top: 50.0,
        width: plot_width,
        height: 300.0,
        y_max: (erank_max / erank_step).ceil() * erank_step,
        layers,
    };
    let rho_panel = Panel { left, top: 400.0, width: plot_width, height: 170.0, y_max: 1.0, layers };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n\
         <text x=\"{:.1}\" y=\"26\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        left + plot_width / 2.0,
        escape(title)
    );
    erank_panel.frame(&mut svg, "entropy effective rank", erank_step, &layer_names);
    let cap_y = erank_panel.y(capacity);
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{cap_y:.1}\" x2=\"{:.1}\" y2=\"{cap_y:.1}\" stroke=\"#555\" stroke-dasharray=\"6 4\"/>",
        left + plot_width
    );
    erank_panel.series(&mut svg, rows, &layer_names, RED, |r| r.spectrum.routing.entropy);
    erank_panel.series(&mut svg, rows, &layer_names, BLUE, |r| r.spectrum.filtering.entropy);
    rho_panel.frame(&mut svg, "rho = ||S||^2 / ||M||^2", 0.2, &layer_names);
    rho_panel.series(&mut svg, rows, &layer_names, GREEN, |r| r.spectrum.routing_fraction);
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">layer</text>",
        left + plot_width / 2.0,
        height - 14.0
    );
    let legend_x = left + plot_width + 20.0;
    for (i, (color, name, dashed)) in [
        (RED, "erank S (routing)", false),
        (BLUE, "erank D (filtering)", false),
        ("#555", &*format!("capacity {capacity:.0}"), true),
        (GREEN, "rho (routing fraction)", false),
    ]
    .iter()
    .enumerate()
    {
        let y = 70.0 + 22.0 * i as f64;
        let dash = if *dashed { " stroke-dasharray=\"6 4\"" } else { "" };
        let _ = writeln!(
            svg,
            "<line x1=\"{legend_x}\" y1=\"{y}\" x2=\"{:.1}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            legend_x + 24.0,
            legend_x + 30.0,
            y + 4.0,
            escape(name)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{legend_x}\" y=\"180\" fill=\"#555\">dots: heads; lines: layer means</text>\n</svg>"
    );
    svg
}
