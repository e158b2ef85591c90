//! What `edgecam probe` says about one /dev/video* node, camera or not (and why not): its id, name,
//! bus, formats, sizes and rates, as plain data (JSON via serde) and as a table. Which mode and
//! encoder a camera gets is the planner's answer, not the device's, so the table takes it as a column.

use super::bus::Bus;
use super::caps::{FormatCaps, Fraction};
use super::classify::NodeKind;
use serde::Serialize;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeReport {
    pub devnode: PathBuf,
    /// `"kind": "camera"`, or `"kind": "skipped", "reason": ...`.
    #[serde(flatten)]
    pub kind: NodeKind,
    /// Why it was skipped, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    pub id: String,
    pub name: String,
    pub driver: String,
    pub card: String,
    pub bus_info: String,
    pub bus: Bus,
    pub serial: Option<String>,
    pub links: Vec<PathBuf>,
    pub formats: Vec<FormatCaps>,
}

const MAX_UNUSED_NAMED: usize = 8;

/// One line per node, then its formats indented, sizes grouped by the rates they share.
/// Names and serials come from the device (USB string descriptors, driver card names): a hostile or
/// broken one could carry terminal escape sequences, newlines or bidi overrides that would rewrite what
/// the table shows. Those are printed escaped (`\u{1b}`) instead.
pub fn printable(s: &str) -> String {
    let dangerous = |c: char| {
        c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(dangerous) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if dangerous(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `camera_detail` fills the last column for a camera (the mode it would stream, or why none).
pub fn render_table(reports: &[NodeReport], camera_detail: impl Fn(&NodeReport) -> String) -> String {
    if reports.is_empty() {
        return "no V4L2 nodes (/dev/video*) found\n".to_string();
    }
    let rows: Vec<[String; 6]> = reports
        .iter()
        .map(|r| {
            let (kind, detail) = match &r.kind {
                NodeKind::Camera => ("camera", camera_detail(r)),
                NodeKind::Skipped(reason) => ("skipped", reason.to_string()),
            };
            [
                r.devnode.display().to_string(),
                kind.to_string(),
                r.id.clone(),
                r.name.clone(),
                r.bus.to_string(),
                detail,
            ]
            .map(|cell| printable(&cell))
        })
        .collect();
    let header = ["NODE", "KIND", "ID", "NAME", "BUS", "MODE / WHY SKIPPED"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 6]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == cells.len() - 1 {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header);
    for (report, row) in reports.iter().zip(&rows) {
        out.push_str(&line(row));
        if report.kind == NodeKind::Camera {
            let (usable, other): (Vec<&FormatCaps>, Vec<&FormatCaps>) =
                report.formats.iter().partition(|f| f.is_usable());
            for format in usable {
                render_format(&mut out, format);
            }
            if !other.is_empty() {
                // vivid has 80 of them: name a few
                let mut names: Vec<String> = other
                    .iter()
                    .take(MAX_UNUSED_NAMED)
                    .map(|f| printable(f.format.fourcc()))
                    .collect();
                if other.len() > MAX_UNUSED_NAMED {
                    names.push("...".into());
                }
                let _ = writeln!(
                    out,
                    "    ({} more that edgecam does not use: {})",
                    other.len(),
                    names.join(" ")
                );
            }
        }
    }
    out
}

fn render_format(out: &mut String, format: &FormatCaps) {
    let _ = writeln!(
        out,
        "    {} ({})",
        printable(format.format.fourcc()),
        printable(&format.description)
    );
    let mut groups: Vec<(Vec<String>, &[Fraction])> = Vec::new();
    for size in &format.sizes {
        let label = format!("{}x{}", size.width, size.height);
        match groups.last_mut() {
            Some((sizes, rates)) if *rates == size.intervals.as_slice() => sizes.push(label),
            _ => groups.push((vec![label], &size.intervals)),
        }
    }
    for (sizes, rates) in groups {
        let rates = if rates.is_empty() {
            "rate not enumerated".to_string()
        } else {
            rates.iter().map(|r| fps_text(*r)).collect::<Vec<_>>().join(" ") + " fps"
        };
        let _ = writeln!(out, "        {}: {rates}", sizes.join(" "));
    }
}

/// 30/1 -> "30", 15/2 -> "7.5".
fn fps_text(rate: Fraction) -> String {
    if rate.den == 1 {
        return rate.num.to_string();
    }
    let s = format!("{:.3}", rate.as_f64());
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fixture::load;

    fn reports(fixture: &str) -> Vec<NodeReport> {
        load(fixture)
            .iter()
            .map(|f| f.node())
            .map(|n| n.report(n.id()))
            .collect()
    }

    #[test]
    fn device_strings_cannot_drive_the_terminal() {
        let mut r = reports("usbcam-uvc-gadget");
        r[1].name = "Cam\u{1b}[2J\u{1b}]0;owned\u{7}\nfake line\u{202e}txt".into();
        r[1].formats[0].description = "MJPEG\r\u{1b}[31m".into();
        let table = render_table(&r, |_| String::new());
        assert!(
            !table
                .chars()
                .any(|c| c == '\u{1b}' || c == '\u{7}' || c == '\r' || c == '\u{202e}'),
            "{table:?}"
        );
        assert!(
            table.contains(r"Cam\u{1b}[2J\u{1b}]0;owned\u{7}\u{a}fake line\u{202e}txt"),
            "{table}"
        );
        assert!(!table.lines().any(|l| l.starts_with("fake line")), "{table}");
        assert_eq!(printable("HD Pro Webcam C920"), "HD Pro Webcam C920");
    }

    #[test]
    fn usbcam_report_lists_camera_and_skipped_nodes() {
        let r = reports("usbcam-uvc-gadget");
        let table = render_table(&r, |camera| format!("detail of {}", camera.id));
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("NODE") && lines[0].contains("MODE / WHY SKIPPED"),
            "{table}"
        );
        assert!(
            lines[1].contains("/dev/video0") && lines[1].contains("skipped") && lines[1].ends_with("output-only node"),
            "{table}"
        );
        assert!(
            lines[2].contains("camera") && lines[2].contains("usb-fake0001") && lines[2].contains("usb2"),
            "{table}"
        );
        assert!(lines[2].ends_with("detail of usb-fake0001"), "{table}");
        assert!(
            table.contains("    MJPG (Motion-JPEG)\n        640x480 1280x720: 30 15 10 fps\n"),
            "{table}"
        );
        assert!(
            table.contains("    YUYV (YUYV 4:2:2)\n        640x360: 30 15 10 fps\n"),
            "{table}"
        );
        assert!(
            lines
                .last()
                .is_some_and(|l| l.contains("/dev/video2") && l.ends_with("metadata node")),
            "{table}"
        );
    }

    #[test]
    fn rates_that_are_not_whole_show_as_decimals_and_unused_formats_are_only_named() {
        let table = render_table(&reports("vivid"), |_| String::new());
        assert!(table.contains("640x480: 25 15 12.5 10 5 4 2 1 fps"), "{table}");
        assert!(
            table.ends_with("    (2 more that edgecam does not use: GREY BA81)\n"),
            "{table}"
        );
    }

    #[test]
    fn json_has_kind_reason_and_formats() {
        let r = reports("usbcam-uvc-gadget");
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json[1]["kind"], "camera");
        assert_eq!(json[1]["id"], "usb-fake0001");
        assert_eq!(json[1]["bus"], serde_json::json!({"type": "usb", "speed_mbps": 480}));
        assert_eq!(json[2]["kind"], "skipped");
        assert_eq!(json[2]["reason"], "metadata");
        assert_eq!(json[2]["why"], "metadata node");
        assert_eq!(
            json[1]["formats"][0]["sizes"][0]["intervals"][0],
            serde_json::json!({"num": 30, "den": 1})
        );
    }

    #[test]
    fn no_nodes_says_so() {
        assert_eq!(
            render_table(&[], |_| unreachable!("no cameras")),
            "no V4L2 nodes (/dev/video*) found\n"
        );
    }
}
