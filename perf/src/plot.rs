//! `--plot`: an SVG of latency percentiles over time, written by hand (two
//! panels, publish and end-to-end, log-scale milliseconds, one line per
//! percentile, one point per interval).
//!
//! Helpers: `svg`.

use std::fmt::Write;

use crate::stats::TestResult;

const WIDTH: f64 = 960.0;
const PANEL_HEIGHT: f64 = 300.0;
const MARGIN_LEFT: f64 = 70.0;
const MARGIN_RIGHT: f64 = 150.0;
const MARGIN_TOP: f64 = 40.0;
const PANEL_GAP: f64 = 60.0;
const COLORS: [&str; 5] = ["#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#7f7f7f"];

/// One line of a panel: its legend and one value per interval.
type Series<'a> = (&'static str, &'a Vec<f64>);

/// The SVG document for `result`, whose intervals are `interval_s` seconds long.
pub fn svg(result: &TestResult, interval_s: f64) -> String {
    let panels: [(&str, Vec<Series<'_>>); 2] = [
        (
            "publish latency (ms)",
            vec![
                ("p50", &result.publish_latency_50pct),
                ("p99", &result.publish_latency_99pct),
                ("p99.9", &result.publish_latency_999pct),
                ("p99.99", &result.publish_latency_9999pct),
                ("max", &result.publish_latency_max),
            ],
        ),
        (
            "end-to-end latency (ms)",
            vec![
                ("p50", &result.end_to_end_latency_50pct),
                ("p99", &result.end_to_end_latency_99pct),
                ("p99.9", &result.end_to_end_latency_999pct),
                ("p99.99", &result.end_to_end_latency_9999pct),
                ("max", &result.end_to_end_latency_max),
            ],
        ),
    ];
    let height = MARGIN_TOP + 2.0 * PANEL_HEIGHT + PANEL_GAP + 50.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT}" y="20" font-size="14">{} — {} (interval {interval_s:.1} s)</text>"#,
        escape(&result.workload),
        escape(&result.driver)
    );
    for (i, (title, series)) in panels.iter().enumerate() {
        let top = MARGIN_TOP + i as f64 * (PANEL_HEIGHT + PANEL_GAP);
        panel(&mut out, top, title, series, interval_s);
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, top: f64, title: &str, series: &[Series<'_>], interval_s: f64) {
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let bottom = top + PANEL_HEIGHT;
    let points = series.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let values = series.iter().flat_map(|(_, v)| v.iter().copied());
    let positive: Vec<f64> = values.filter(|v| *v > 0.0 && v.is_finite()).collect();
    let (lo, hi) = if positive.is_empty() {
        (0.01, 10.0)
    } else {
        let min = positive.iter().copied().fold(f64::INFINITY, f64::min);
        let max = positive.iter().copied().fold(0.0, f64::max);
        (
            10f64.powf(min.log10().floor()),
            10f64.powf(max.log10().ceil().max(min.log10().floor() + 1.0)),
        )
    };
    let y = |v: f64| -> f64 {
        let v = v.max(lo);
        bottom - (v.log10() - lo.log10()) / (hi.log10() - lo.log10()) * PANEL_HEIGHT
    };
    let span_s = (points.max(1)) as f64 * interval_s;
    let x = |i: usize| -> f64 { MARGIN_LEFT + ((i + 1) as f64 * interval_s) / span_s * plot_w };
    let _ = writeln!(
        out,
        r##"<text x="{MARGIN_LEFT}" y="{}" font-size="13">{title}</text>"##,
        top - 8.0
    );
    let _ = writeln!(
        out,
        r##"<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_w}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
    );
    // Decades on the y axis.
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        let yy = y(decade);
        let _ = writeln!(
            out,
            r##"<line x1="{MARGIN_LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            yy + 4.0,
            trim(decade)
        );
        decade *= 10.0;
    }
    // Time ticks: about eight.
    let step = nice_step(span_s / 8.0);
    let mut t = 0.0;
    while t <= span_s + 1e-9 {
        let xx = MARGIN_LEFT + t / span_s * plot_w;
        let _ = writeln!(
            out,
            r##"<line x1="{xx:.1}" y1="{bottom}" x2="{xx:.1}" y2="{:.1}" stroke="#444"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{}s</text>"##,
            bottom + 4.0,
            bottom + 17.0,
            trim(t)
        );
        t += step;
    }
    for (k, (name, values)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let path: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        if path.len() == 1 {
            let _ = writeln!(
                out,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"##,
                x(0),
                y(values[0])
            );
        } else if !path.is_empty() {
            let _ = writeln!(
                out,
                r##"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"##,
                path.join(" ")
            );
        }
        let ly = top + 16.0 + k as f64 * 18.0;
        let lx = MARGIN_LEFT + plot_w + 12.0;
        let _ = writeln!(
            out,
            r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name}</text>"##,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0
        );
    }
}

fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * p
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_a_line_per_percentile() {
        let mut r = TestResult {
            workload: "w <1>".into(),
            ..Default::default()
        };
        r.publish_latency_50pct = vec![1.0, 1.2, 0.9];
        r.publish_latency_99pct = vec![2.0, 3.0, 2.5];
        r.end_to_end_latency_50pct = vec![1.5];
        let s = svg(&r, 10.0);
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("w &lt;1&gt;"));
    }
}
