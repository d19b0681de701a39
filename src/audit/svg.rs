//! Inline SVG bar charts for the HTML report, written by hand.
//!
//! The report must open offline as one file, so no charting library or script is fetched; SVG
//! drawn here is plain markup that any browser renders and that stays readable when printed.
//! Every bar sits on a full-width track, so a chart with nothing to show still draws its rows
//! (and a reader sees "zero", not a broken chart). Each segment carries a `<title>` tooltip.

use std::fmt::Write as _;

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One series of a stacked chart: its label and fill colour.
pub struct Series<'a> {
    pub label: &'a str,
    pub color: &'a str,
}

/// A round step for about `parts` ticks up to `max` (1, 2 or 5 times a power of ten).
fn nice_step(max: u64, parts: u64) -> u64 {
    let raw = (max.max(1)).div_ceil(parts.max(1));
    let mut p = 1u64;
    while p.saturating_mul(10) <= raw {
        p = p.saturating_mul(10);
    }
    for m in [1, 2, 5, 10] {
        if p.saturating_mul(m) >= raw {
            return p.saturating_mul(m);
        }
    }
    p.saturating_mul(10)
}

/// Approximate width of a label at the charts' 12px font: enough to lay out a legend.
fn text_width(s: &str) -> f64 {
    7.0 * s.chars().count() as f64
}

/// Draws the legend from `x0`, wrapping before `max_x`; returns the y below its last line.
fn legend(out: &mut String, series: &[Series], x0: f64, max_x: f64) -> f64 {
    let mut x = x0;
    let mut y = 18.0;
    for s in series {
        let w = 17.0 + text_width(s.label);
        if x > x0 && x + w > max_x {
            x = x0;
            y += 20.0;
        }
        let _ = write!(
            out,
            r#"<g class="legend"><rect x="{x:.1}" y="{:.1}" width="12" height="12" rx="2" fill="{}"/><text x="{:.1}" y="{y:.1}">{}</text></g>"#,
            y - 10.0,
            s.color,
            x + 17.0,
            esc(s.label)
        );
        x += w + 22.0;
    }
    y + 14.0
}

/// Horizontal stacked bars: one row per label, one segment per series.
pub fn horizontal(id: &str, title: &str, rows: &[(String, Vec<u64>)], series: &[Series]) -> String {
    let width = 1000.0;
    let label_w = 170.0;
    let right = 70.0;
    let plot_w = width - label_w - right;
    let bar_h = 22.0;
    let gap = 12.0;
    let axis_h = 26.0;
    let mut legend_svg = String::new();
    let top = legend(&mut legend_svg, series, label_w, width - right) + 12.0;
    let height = top + rows.len().max(1) as f64 * (bar_h + gap) + axis_h;
    let max = rows
        .iter()
        .map(|(_, v)| v.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let step = nice_step(max, 4);
    let scale_max = (max.div_ceil(step).max(1) * step) as f64;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg id="{}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" aria-labelledby="{}-title"><title id="{}-title">{}</title>"#,
        esc(id),
        esc(id),
        esc(id),
        esc(title)
    );
    out.push_str(&legend_svg);
    // Grid lines and tick labels.
    let mut tick = 0u64;
    while tick as f64 <= scale_max {
        let x = label_w + plot_w * tick as f64 / scale_max;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top - 6.0,
            height - axis_h + 2.0,
            height - 8.0,
            fmt_count(tick)
        );
        tick += step;
    }
    for (i, (label, values)) in rows.iter().enumerate() {
        let y = top + i as f64 * (bar_h + gap);
        let _ = write!(
            out,
            r#"<text class="row-label" x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect class="track" x="{label_w}" y="{y:.1}" width="{plot_w:.1}" height="{bar_h}" rx="3"/>"#,
            label_w - 10.0,
            y + bar_h / 2.0 + 4.5,
            esc(label)
        );
        let mut x = label_w;
        for (v, s) in values.iter().zip(series) {
            if *v == 0 {
                continue;
            }
            let w = plot_w * *v as f64 / scale_max;
            let _ = write!(
                out,
                r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bar_h}" fill="{}"><title>{}: {} {}</title></rect>"#,
                s.color,
                esc(label),
                fmt_count(*v),
                esc(s.label)
            );
            x += w;
        }
        let total: u64 = values.iter().sum();
        let _ = write!(
            out,
            r#"<text class="value" x="{:.1}" y="{:.1}">{}</text>"#,
            x + 6.0,
            y + bar_h / 2.0 + 4.5,
            fmt_count(total)
        );
    }
    out.push_str("</svg>");
    out
}

/// Vertical stacked columns: one column per label (e.g. a month), one segment per series.
pub fn vertical(id: &str, title: &str, cols: &[(String, Vec<u64>)], series: &[Series]) -> String {
    let width = 1000.0;
    let left = 56.0;
    let right = 16.0;
    let mut legend_svg = String::new();
    let top = legend(&mut legend_svg, series, left, width - right) + 16.0;
    let plot_h = 220.0;
    let bottom = 34.0;
    let height = top + plot_h + bottom;
    let plot_w = width - left - right;
    let n = cols.len().max(1) as f64;
    let slot = plot_w / n;
    let bar_w = (slot * 0.6).min(72.0);
    let max = cols
        .iter()
        .map(|(_, v)| v.iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let step = nice_step(max, 4);
    let scale_max = (max.div_ceil(step).max(1) * step) as f64;
    let base = top + plot_h;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg id="{}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" aria-labelledby="{}-title"><title id="{}-title">{}</title>"#,
        esc(id),
        esc(id),
        esc(id),
        esc(title)
    );
    out.push_str(&legend_svg);
    let mut tick = 0u64;
    while tick as f64 <= scale_max {
        let y = base - plot_h * tick as f64 / scale_max;
        let _ = write!(
            out,
            r#"<line class="grid" x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            width - right,
            left - 8.0,
            y + 4.0,
            fmt_count(tick)
        );
        tick += step;
    }
    for (i, (label, values)) in cols.iter().enumerate() {
        let cx = left + slot * (i as f64 + 0.5);
        let x = cx - bar_w / 2.0;
        let _ = write!(
            out,
            r#"<rect class="track" x="{x:.1}" y="{top}" width="{bar_w:.1}" height="{plot_h}" rx="3"/><text class="col-label" x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            base + 20.0,
            esc(label)
        );
        let mut y = base;
        for (v, s) in values.iter().zip(series) {
            if *v == 0 {
                continue;
            }
            let h = plot_h * *v as f64 / scale_max;
            y -= h;
            let _ = write!(
                out,
                r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{}"><title>{}: {} {}</title></rect>"#,
                s.color,
                esc(label),
                fmt_count(*v),
                esc(s.label)
            );
        }
        let total: u64 = values.iter().sum();
        let _ = write!(
            out,
            r#"<text class="value" x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            y - 6.0,
            fmt_count(total)
        );
    }
    out.push_str("</svg>");
    out
}

/// `12345` → `12,345`.
pub fn fmt_count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_counts() {
        assert_eq!(nice_step(0, 4), 1);
        assert_eq!(nice_step(7, 4), 2);
        assert_eq!(nice_step(95, 4), 50);
        assert_eq!(nice_step(1234, 4), 500);
        assert_eq!(fmt_count(1234567), "1,234,567");
        assert_eq!(fmt_count(12), "12");
    }

    #[test]
    fn charts_escape_and_draw_tracks() {
        let s = [Series {
            label: "a<b",
            color: "#000",
        }];
        let svg = horizontal("c", "T", &[("x&y".into(), vec![0])], &s);
        assert!(svg.contains("x&amp;y") && svg.contains("a&lt;b"));
        assert!(svg.contains(r#"class="track""#));
        assert!(!svg.contains(r#"class="bar""#), "zero draws no segment");
        let svg = vertical("v", "T", &[("2026-11".into(), vec![3])], &s);
        assert!(svg.contains(r#"class="bar""#));
    }
}
