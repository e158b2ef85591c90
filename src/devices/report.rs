//! `edgecam probe`: every /dev/video* node, camera or not (and why not), with its id, name,
//! bus, formats, sizes, rates and the mode edgecam would choose. JSON via serde, and a table.

use super::bus::Bus;
use super::caps::{CaptureMode, FormatCaps, Fraction};
use super::classify::NodeKind;
use super::mode::Wanted;
use super::node::Node;
use super::udev_props::{props_for_devnode, video_nodes};
use serde::Serialize;
use std::collections::HashSet;
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
    /// The mode `choose_mode` picks for 640x480@30 (cameras only).
    pub mode: Option<CaptureMode>,
}

impl NodeReport {
    /// One line for logs: "camera, YUYV 640x480@30" or "skipped: metadata node".
    pub fn summary(&self) -> String {
        match (&self.kind, &self.mode) {
            (NodeKind::Camera, Some(mode)) => format!("camera, {mode}"),
            (NodeKind::Camera, None) => "camera, no usable mode".to_string(),
            (NodeKind::Skipped(reason), _) => format!("skipped: {reason}"),
        }
    }
}

/// Probes every /dev/video* node now.
pub fn scan() -> Vec<NodeReport> {
    let wanted = Wanted::default();
    let mut ids = HashSet::new();
    video_nodes()
        .iter()
        .map(|devnode| {
            let node = Node::examine(devnode, props_for_devnode(devnode));
            let id = if node.is_camera() { node.id_avoiding(|id| ids.contains(id)) } else { node.id() };
            if node.is_camera() {
                ids.insert(id.clone());
            }
            node.report(id, &wanted)
        })
        .collect()
}

/// One line per node, then its formats indented, sizes grouped by the rates they share.
pub fn render_table(reports: &[NodeReport]) -> String {
    if reports.is_empty() {
        return "no V4L2 nodes (/dev/video*) found\n".to_string();
    }
    let rows: Vec<[String; 6]> = reports
        .iter()
        .map(|r| {
            let (kind, detail) = match &r.kind {
                NodeKind::Camera => ("camera", r.mode.as_ref().map_or("no usable mode".to_string(), |m| m.to_string())),
                NodeKind::Skipped(reason) => ("skipped", reason.to_string()),
            };
            [r.devnode.display().to_string(), kind.to_string(), r.id.clone(), r.name.clone(), r.bus.to_string(), detail]
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
            for format in &report.formats {
                render_format(&mut out, format);
            }
        }
    }
    out
}

fn render_format(out: &mut String, format: &FormatCaps) {
    let _ = writeln!(out, "    {} ({})", format.format.fourcc(), format.description);
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
