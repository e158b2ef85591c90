//! The repository's profiles/*.yaml, compiled in so the daemon has encoders wherever it runs from
//! (`cargo run`, a test, a binary copied to a Pi). Installed and /etc files override them by name.

/// (file name, contents). A test checks that this lists exactly the files in profiles/.
pub(super) const PROFILES: &[(&str, &str)] = &[
    ("passthrough.yaml", include_str!("../../profiles/passthrough.yaml")),
    ("nvh264enc.yaml", include_str!("../../profiles/nvh264enc.yaml")),
    ("v4l2h264enc.yaml", include_str!("../../profiles/v4l2h264enc.yaml")),
    ("vah264enc.yaml", include_str!("../../profiles/vah264enc.yaml")),
    ("vaapih264enc.yaml", include_str!("../../profiles/vaapih264enc.yaml")),
    ("x264.yaml", include_str!("../../profiles/x264.yaml")),
    ("openh264.yaml", include_str!("../../profiles/openh264.yaml")),
    ("vp8.yaml", include_str!("../../profiles/vp8.yaml")),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_file_in_the_profiles_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".yaml"))
            .collect();
        on_disk.sort();
        let mut built_in: Vec<String> = PROFILES.iter().map(|(name, _)| name.to_string()).collect();
        built_in.sort();
        assert_eq!(on_disk, built_in);
    }
}
