//! What `edgecam probe` prints: every V4L2 node's report (see `devices`), and for each camera the
//! planner's answer with the config `run` would use, so probe and the daemon say the same thing.

use serde_json::{json, Value};

use crate::config::Config;
use crate::devices::{NodeKind, NodeReport};
use crate::encoders::Catalog;
use crate::planner::{self, DeviceKeys, NotStreamed, Plan, Source};

/// A camera node's answer: the camera id it would stream under, and its plan or why it would not
/// stream. None for nodes that are not cameras.
pub type Answer = Option<(String, Result<Plan, NotStreamed>)>;

/// The planner's answer for each report, in order.
pub fn answers(reports: &[NodeReport], config: &Config, catalog: &Catalog) -> Vec<Answer> {
    reports
        .iter()
        .map(|report| {
            if report.kind != NodeKind::Camera {
                return None;
            }
            let keys = DeviceKeys {
                id: &report.id,
                devnode: &report.devnode,
                links: &report.links,
                serial: report.serial.as_deref(),
            };
            let (id, entry) = planner::config_entry(config, keys);
            let source = Source::Device {
                devnode: &report.devnode,
                formats: &report.formats,
                bus: report.bus,
            };
            Some((id, planner::plan(config, entry, source, catalog)))
        })
        .collect()
}

/// The node table, its mode column filled from the plans, then one line per camera on its encoder.
pub fn table(reports: &[NodeReport], answers: &[Answer]) -> String {
    let detail = |report: &NodeReport| {
        let at = reports.iter().position(|r| r.devnode == report.devnode);
        match at.and_then(|at| answers.get(at)).and_then(Option::as_ref) {
            Some((_, Ok(plan))) => plan.source.to_string(),
            Some((_, Err(why))) => format!("not streamed: {why}"),
            None => String::new(),
        }
    };
    let mut out = crate::devices::render_table(reports, detail);
    for (report, answer) in reports.iter().zip(answers) {
        if let Some((id, Ok(plan))) = answer {
            let name = if *id == report.id {
                id.clone()
            } else {
                format!("{} (camera {id})", report.id)
            };
            out.push_str(&format!("{name}: encoder {}\n", plan.reason));
        }
    }
    out
}

/// The reports as JSON, each camera with its plan: `camera_id`, `mode` (as the probe lists modes),
/// `source`, `encoder` and its `fallbacks`, `vp8`, `bitrate_kbps` and `encoder_reason`; or
/// `not_streamed` with the reason.
pub fn json(reports: &[NodeReport], answers: &[Answer]) -> Result<Value, serde_json::Error> {
    let mut list = Vec::with_capacity(reports.len());
    for (report, answer) in reports.iter().zip(answers) {
        let mut node = serde_json::to_value(report)?;
        match answer {
            Some((id, Ok(plan))) => {
                let names: Vec<&str> = plan.encoders.iter().map(|e| e.profile.as_str()).collect();
                node["camera_id"] = json!(id);
                node["mode"] = serde_json::to_value(&plan.source.mode)?;
                node["source"] = json!(plan.source.to_string());
                node["encoder"] = json!(names.first());
                node["fallbacks"] = json!(names.get(1..).unwrap_or_default());
                node["vp8"] = json!(plan.vp8.as_ref().map(|p| &p.profile));
                node["bitrate_kbps"] = json!(plan.limits.ceiling_kbps);
                node["encoder_reason"] = json!(plan.reason.to_string());
            }
            Some((id, Err(why))) => {
                node["camera_id"] = json!(id);
                node["not_streamed"] = json!(why.to_string());
            }
            None => {}
        }
        list.push(node);
    }
    Ok(Value::Array(list))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::fixture;
    use crate::encoders::machine::FakeMachine;
    use std::path::Path;

    fn reports(name: &str) -> Vec<NodeReport> {
        fixture::load(name)
            .iter()
            .map(|f| f.node())
            .map(|n| n.report(n.id()))
            .collect()
    }

    fn pc_catalog() -> Catalog {
        let mut catalog = Catalog::load(&[], &FakeMachine::pc());
        catalog.check(&FakeMachine::pc());
        catalog
    }

    #[test]
    fn the_table_shows_each_cameras_mode_and_encoder_with_its_reason() {
        let reports = reports("usbcam-uvc-gadget");
        let answers = answers(&reports, &Config::default(), &pc_catalog());
        let text = table(&reports, &answers);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[2].contains("usb-fake0001") && lines[2].ends_with("MJPG 640x480@30"),
            "{text}"
        );
        assert!(
            text.ends_with("usb-fake0001: encoder x264: highest-priority usable profile for MJPG\n"),
            "{text}"
        );
    }

    #[test]
    fn the_json_carries_the_plan_the_daemon_would_make_under_the_config() {
        let reports = reports("usbcam-uvc-gadget");
        let config = Config::parse(
            "cameras:\n  door: { serial: FAKE0001, profile: openh264, bitrate: 700 }\n",
            Path::new("test.yaml"),
        )
        .unwrap();
        let value = json(&reports, &answers(&reports, &config, &pc_catalog())).unwrap();
        let camera = &value[1];
        assert_eq!(camera["kind"], "camera");
        assert_eq!(camera["camera_id"], "door");
        assert_eq!(
            camera["mode"],
            json!({"format": "mjpeg", "width": 640, "height": 480, "fps": {"num": 30, "den": 1}})
        );
        assert_eq!(camera["source"], "MJPG 640x480@30");
        assert_eq!(camera["encoder"], "openh264");
        assert_eq!(camera["fallbacks"], json!(["x264"]));
        assert_eq!(camera["vp8"], "vp8");
        assert_eq!(camera["bitrate_kbps"], 700);
        assert_eq!(camera["encoder_reason"], "openh264: forced by the config");
        assert_eq!(value[2]["kind"], "skipped");
        assert!(value[2].get("encoder").is_none());
    }

    #[test]
    fn a_camera_that_would_not_stream_says_why_in_both_forms() {
        let reports = reports("usbcam-uvc-gadget");
        let config = Config::parse("cameras:\n  usb-fake0001: { enabled: false }\n", Path::new("t.yaml")).unwrap();
        let answers = answers(&reports, &config, &pc_catalog());
        assert!(table(&reports, &answers)
            .lines()
            .nth(2)
            .unwrap()
            .ends_with("not streamed: disabled in the config"));
        assert_eq!(
            json(&reports, &answers).unwrap()[1]["not_streamed"],
            "disabled in the config"
        );
    }
}
