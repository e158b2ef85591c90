//! The optional YAML config (`/etc/edgecam/config.yaml`). Strict on purpose: an unknown key or a bad
//! value is an error with `file:line:col`, never a silently ignored setting. Defaults live here, in code;
//! the packaged default file documents them by example.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the config is looked for when `--config` is not given; its absence is not an error.
pub const DEFAULT_PATH: &str = "/etc/edgecam/config.yaml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// serde_yaml knows where it stopped; the message is shaped `file:line:col: what` so editors can jump to it.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    InvalidNoPosition { path: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    /// Who may see what. `None` (no `auth:` key) is only accepted on a loopback `listen`; see `Auth`.
    pub auth: Option<Auth>,
    /// Names this device answers to besides its IP addresses, `localhost` and its host name
    /// (`<hostname>`, `<hostname>.local`): any other `Host` header is refused, against DNS rebinding.
    pub server_names: Vec<String>,
    /// Page origins (`https://nvr.example.org`) allowed to open `/ws` besides the daemon's own.
    pub allowed_origins: Vec<String>,
    /// Serve https/wss with this certificate chain and key (PEM files) instead of plain http.
    pub tls: Option<TlsFiles>,
    /// Serve the viewer from this folder instead of the copy built into the binary.
    pub web_dir: Option<PathBuf>,
    /// Stream every V4L2 camera udev finds; false streams only the cameras listed here.
    pub discovery: bool,
    pub idle: IdlePolicy,
    /// A viewer that has not connected (offer, answer, ICE, DTLS) by then is dropped and its page
    /// asks again. Slow boards, or many viewers at once on a small one, may need longer.
    pub negotiation_timeout: NegotiationTimeout,
    pub ice: IceConfig,
    pub defaults: CameraDefaults,
    pub cameras: BTreeMap<CameraId, CameraConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // Only this machine by default: a config-less daemon (`edgecam run --demo 1`) has no
            // users, so it must not be reachable from the network. The packaged config listens on
            // all addresses and requires `auth:`.
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            auth: None,
            server_names: Vec::new(),
            allowed_origins: Vec::new(),
            tls: None,
            web_dir: None,
            discovery: true,
            idle: IdlePolicy::default(),
            negotiation_timeout: NegotiationTimeout(10),
            ice: IceConfig::default(),
            defaults: CameraDefaults::default(),
            cameras: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM: the server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `auth: none` (explicitly open) or the users and tokens allowed in.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Required(AuthConfig),
}

/// A visitor rather than an untagged enum, so a mistake inside the table keeps its line and column.
impl<'de> Deserialize<'de> for Auth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AuthVisitor;
        impl<'de> serde::de::Visitor<'de> for AuthVisitor {
            type Value = Auth;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`none` or a table of users and tokens")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Auth, E> {
                match v {
                    "none" => Ok(Auth::None),
                    _ => Err(E::custom(format!(
                        "auth must be `none` or a table of users and tokens, got {v:?}"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Auth, A::Error> {
                AuthConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Auth::Required)
            }
        }
        d.deserialize_any(AuthVisitor)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// HTTP Basic users (the page, the API).
    #[serde(default)]
    pub users: BTreeMap<String, Account>,
    /// Bearer tokens for scripts, sent as `Authorization: Bearer <name>:<secret>`; the name picks the
    /// hash so one attempt costs one argon2 verification.
    #[serde(default)]
    pub tokens: BTreeMap<String, Account>,
}

/// A user or a token: the argon2 PHC string of its secret (`edgecam hash-password`) and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub hash: PasswordHash,
    #[serde(default)]
    pub watch: Watch,
    /// May read `/api/cameras` and `/api/profiles` (the page itself needs neither).
    #[serde(default)]
    pub api: bool,
}

/// An argon2 PHC string, checked when the config is read so a pasted-wrong hash is a config error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match argon2::PasswordHash::new(&s) {
            Ok(h) if h.algorithm.as_str().starts_with("argon2") => Ok(Self(s)),
            Ok(h) => Err(serde::de::Error::custom(format!(
                "hash must be an argon2 PHC string (edgecam hash-password), got algorithm {}",
                h.algorithm
            ))),
            Err(e) => Err(serde::de::Error::custom(format!(
                "hash is not a PHC string ({e}); make one with `edgecam hash-password`"
            ))),
        }
    }
}

/// Cameras an account may watch: `all` or a list of camera ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Watch {
    #[default]
    All,
    Only(Vec<CameraId>),
}

impl Watch {
    pub fn allows(&self, camera: &str) -> bool {
        match self {
            Watch::All => true,
            Watch::Only(list) => list.iter().any(|c| c.as_str() == camera),
        }
    }
}

impl<'de> Deserialize<'de> for Watch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct WatchVisitor;
        impl<'de> serde::de::Visitor<'de> for WatchVisitor {
            type Value = Watch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`all` or a list of camera ids")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Watch, E> {
                match v {
                    "all" => Ok(Watch::All),
                    _ => Err(E::custom(format!(
                        "watch must be `all` or a list of camera ids, got {v:?}"
                    ))),
                }
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Watch, A::Error> {
                Vec::<CameraId>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Watch::Only)
            }
        }
        d.deserialize_any(WatchVisitor)
    }
}

/// What a camera does while nobody watches it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdlePolicy {
    /// Keep capturing and encoding: a new viewer gets video in well under a second (see bench/ for the cost).
    #[default]
    KeepEncoding,
    /// Stop the pipeline (frees the device and the CPU); the first viewer waits for it to start.
    Stop,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IceConfig {
    /// STUN/TURN servers, in the browser's RTCIceServer shape so the page can use them as they are.
    pub servers: Vec<IceServer>,
    /// Restrict ICE host candidates to these addresses. libnice gathers no loopback candidates by
    /// itself, so tests on one machine list 127.0.0.1 here.
    pub local_addresses: Vec<std::net::IpAddr>,
    /// A TURN server's shared secret (coturn `static-auth-secret`): the page then gets short-lived
    /// credentials made from it for each `turn:` server listed without a username, instead of
    /// long-term ones (see `http::turn`). Never sent to browsers itself.
    #[serde(skip_serializing)]
    pub turn_secret: Option<String>,
    /// How long those credentials stay valid, in seconds. A TURN allocation is refreshed with the same
    /// credentials, so this bounds how long a viewer can stay relayed; the page asks again on every reconnect.
    pub turn_credential_ttl: TurnTtl,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The adaptive bitrate's default floor: the lowest estimate GCC gives (media/congestion.rs). A floor
/// above the estimate deadlocks a narrow link: with 150 kbit/s, a 250 kbit/s link stayed congested
/// (floor + retransmissions > link), GCC pinned at its minimum, 10 fps and 18 s frozen of 30
/// (tests/shaped_policy.rs). A blurry picture that moves beats a sharp one that stands.
pub const DEFAULT_MIN_BITRATE_KBPS: u32 = 50;
/// Encodings one camera runs at most by default (the main one plus one of: the low tier, VP8). Each
/// costs about 10 % of a core at 640x480 in software (bench/results): two is what a Pi can give each camera.
pub const DEFAULT_MAX_ENCODINGS: u32 = 2;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraDefaults {
    pub width: Dimension,
    pub height: Dimension,
    pub fps: Fps,
    /// kbps; the original system sent about 1 Mbps per 640x480@30 camera. The ceiling of the adaptive
    /// bitrate: an encode follows its viewers' links between `min_bitrate` and this.
    pub bitrate: Bitrate,
    /// kbps; the floor of the adaptive bitrate (`bitrate` pins the encode at one rate).
    pub min_bitrate: Bitrate,
    /// Encodings a camera may run at once: the main one, plus a low tier for viewers on weak links or
    /// VP8 for browsers without H.264. 1 keeps every H.264 viewer on the one encode.
    pub max_encodings: MaxEncodings,
    pub profile: Option<String>,
}

impl Default for CameraDefaults {
    fn default() -> Self {
        Self {
            width: Dimension(640),
            height: Dimension(480),
            fps: Fps(30),
            bitrate: Bitrate(1000),
            min_bitrate: Bitrate(DEFAULT_MIN_BITRATE_KBPS),
            max_encodings: MaxEncodings(DEFAULT_MAX_ENCODINGS),
            profile: None,
        }
    }
}

/// One entry of `cameras:`. With `device`, `serial` or `path` it pins a camera found by udev to this id
/// (the original's `camera1: /dev/video0`); with `test_pattern` it is a synthetic camera; with none of
/// them the key itself is matched against discovered camera ids, to rename, tune or disable that camera.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawCameraConfig")]
pub struct CameraConfig {
    pub selector: Option<Selector>,
    pub name: Option<String>,
    pub width: Option<Dimension>,
    pub height: Option<Dimension>,
    pub fps: Option<Fps>,
    pub bitrate: Option<Bitrate>,
    pub min_bitrate: Option<Bitrate>,
    pub max_encodings: Option<MaxEncodings>,
    pub profile: Option<String>,
    pub enabled: bool,
    /// Send this camera to a media server as well (`push: {whip: URL, token: ...}`).
    pub push: Option<Push>,
}

/// Where a camera is pushed: a WHIP endpoint (RFC 9725) and the bearer token it wants, if any.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Push {
    #[serde(deserialize_with = "whip_url")]
    pub whip: String,
    #[serde(default)]
    pub token: Option<String>,
}

/// The token is a credential: it never reaches a log line through `{:?}`.
impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("whip", &self.whip)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

fn whip_url<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let url = String::deserialize(d)?;
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .map(|rest| rest.split(['/', '?']).next().unwrap_or_default());
    match host {
        Some(host) if !host.is_empty() => Ok(url),
        _ => Err(serde::de::Error::custom(format!(
            "push.whip must be an http:// or https:// URL with a host, got {url:?}"
        ))),
    }
}

impl CameraConfig {
    /// A synthetic camera with everything else at the defaults (`edgecam run --demo N`).
    pub fn test_pattern(pattern: TestPattern, name: String) -> Self {
        Self {
            selector: Some(Selector::TestPattern(pattern)),
            name: Some(name),
            width: None,
            height: None,
            fps: None,
            bitrate: None,
            min_bitrate: None,
            max_encodings: None,
            profile: None,
            enabled: true,
            push: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Device(PathBuf),
    Serial(String),
    Path(String),
    TestPattern(TestPattern),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCameraConfig {
    device: Option<PathBuf>,
    serial: Option<String>,
    path: Option<String>,
    test_pattern: Option<TestPattern>,
    name: Option<String>,
    width: Option<Dimension>,
    height: Option<Dimension>,
    fps: Option<Fps>,
    bitrate: Option<Bitrate>,
    min_bitrate: Option<Bitrate>,
    max_encodings: Option<MaxEncodings>,
    profile: Option<String>,
    #[serde(default = "yes")]
    enabled: bool,
    push: Option<Push>,
}

fn yes() -> bool {
    true
}

impl TryFrom<RawCameraConfig> for CameraConfig {
    type Error = String;

    fn try_from(raw: RawCameraConfig) -> Result<Self, String> {
        let mut selectors = Vec::new();
        if let Some(d) = raw.device {
            if !d.is_absolute() {
                return Err(format!("device must be an absolute path, got {}", d.display()));
            }
            selectors.push(Selector::Device(d));
        }
        if let Some(s) = raw.serial {
            selectors.push(Selector::Serial(s));
        }
        if let Some(p) = raw.path {
            selectors.push(Selector::Path(p));
        }
        if let Some(t) = raw.test_pattern {
            selectors.push(Selector::TestPattern(t));
        }
        if selectors.len() > 1 {
            return Err("give at most one of device, serial, path, test_pattern".into());
        }
        if let (Some(floor), Some(ceiling)) = (raw.min_bitrate, raw.bitrate) {
            if floor.0 > ceiling.0 {
                return Err(format!(
                    "min_bitrate ({}) must not be above bitrate ({})",
                    floor.0, ceiling.0
                ));
            }
        }
        Ok(Self {
            selector: selectors.pop(),
            name: raw.name,
            width: raw.width,
            height: raw.height,
            fps: raw.fps,
            bitrate: raw.bitrate,
            min_bitrate: raw.min_bitrate,
            max_encodings: raw.max_encodings,
            profile: raw.profile,
            enabled: raw.enabled,
            push: raw.push,
        })
    }
}

/// videotestsrc patterns offered for synthetic cameras (a subset: the ones that make sense to look at).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestPattern {
    Smpte,
    Ball,
    Snow,
    Pinwheel,
    Spokes,
    Circular,
    Gradient,
    Colors,
    Bar,
    /// The ball, with its capture time drawn into a top-left corner code (`media::timecode`) so a
    /// browser can measure glass-to-glass latency through the daemon (bench/latency.rs).
    Stamp,
}

impl TestPattern {
    /// Patterns given to `--demo N` cameras in turn, so each looks different.
    pub const DEMO_CYCLE: [TestPattern; 6] = [
        TestPattern::Ball,
        TestPattern::Smpte,
        TestPattern::Pinwheel,
        TestPattern::Spokes,
        TestPattern::Colors,
        TestPattern::Bar,
    ];

    /// The nick videotestsrc's `pattern` property takes. The ball is drawn by the daemon on black
    /// (`draws_ball`), far cheaper than videotestsrc's own.
    pub fn gst_nick(self) -> &'static str {
        match self {
            Self::Smpte => "smpte",
            Self::Ball | Self::Stamp => "black",
            Self::Snow => "snow",
            Self::Pinwheel => "pinwheel",
            Self::Spokes => "spokes",
            Self::Circular => "circular",
            Self::Gradient => "gradient",
            Self::Colors => "colors",
            Self::Bar => "bar",
        }
    }

    /// Whether the daemon draws a moving ball onto the pattern (see `media::moving_ball`).
    pub fn draws_ball(self) -> bool {
        matches!(self, Self::Ball | Self::Stamp)
    }

    /// Whether frames carry their capture time (see `media::timecode`).
    pub fn stamps_time(self) -> bool {
        self == Self::Stamp
    }
}

impl std::fmt::Display for TestPattern {
    /// The name the config uses (`test_pattern: smpte`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Smpte => "smpte",
            Self::Ball => "ball",
            Self::Snow => "snow",
            Self::Pinwheel => "pinwheel",
            Self::Spokes => "spokes",
            Self::Circular => "circular",
            Self::Gradient => "gradient",
            Self::Colors => "colors",
            Self::Bar => "bar",
            Self::Stamp => "stamp",
        })
    }
}

/// Validating newtypes: the check runs during deserialisation, so serde_yaml reports where the bad value is.
macro_rules! bounded_u32 {
    ($name:ident, $min:expr, $max:expr, $what:expr) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub struct $name(pub u32);

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = u32::deserialize(d)?;
                if !($min..=$max).contains(&v) {
                    return Err(serde::de::Error::custom(format!(
                        "{} must be between {} and {}, got {}",
                        $what, $min, $max, v
                    )));
                }
                Ok(Self(v))
            }
        }
    };
}

bounded_u32!(Dimension, 16, 7680, "width/height");
bounded_u32!(Fps, 1, 240, "fps");
bounded_u32!(Bitrate, 50, 100_000, "bitrate (kbps)");
bounded_u32!(MaxEncodings, 1, 3, "max_encodings");
bounded_u32!(NegotiationTimeout, 1, 300, "negotiation_timeout (seconds)");
bounded_u32!(TurnTtl, 60, 7 * 86400, "turn_credential_ttl (seconds)");

/// A day: long enough for a viewer left open on a wall screen between reconnects.
impl Default for TurnTtl {
    fn default() -> Self {
        Self(86400)
    }
}

/// A camera id as shown to users and used in URLs and signalling: short, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CameraId(String);

impl CameraId {
    pub const MAX_LEN: usize = 64;

    pub fn new(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(format!(
                "camera id {s:?} must be 1-{} characters of letters, digits, '-' or '_'",
                Self::MAX_LEN
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CameraId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CameraId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CameraId::new(&s).map_err(serde::de::Error::custom)
    }
}

impl Config {
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        // An empty file (or one with only comments) means "all defaults", like no file at all.
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(|e| located(path, &e))
    }

    /// A daemon reachable from the network must have been told who may watch: users and tokens, or
    /// `auth: none` written on purpose. Checked after command-line overrides, so `--listen` cannot
    /// open an unprotected daemon to the network either.
    pub fn check_exposure(&self) -> Result<(), String> {
        if self.auth.is_none() && !self.listen.ip().is_loopback() {
            return Err(format!(
                "listen {} is reachable from the network but the config has no `auth:` section; \
                 add users (see `edgecam hash-password`) or write `auth: none` to serve without access control",
                self.listen
            ));
        }
        if let Some(Auth::Required(a)) = &self.auth {
            if a.users.is_empty() && a.tokens.is_empty() {
                return Err("auth: lists no users and no tokens, so nobody could log in".into());
            }
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

fn located(path: &Path, e: &serde_yaml::Error) -> ConfigError {
    let path = path.display().to_string();
    let full = e.to_string();
    match e.location() {
        Some(loc) => {
            // serde_yaml appends " at line L column C" to its message; the position goes in front instead.
            let message = full.split(" at line ").next().unwrap_or(&full).to_string();
            ConfigError::Invalid {
                path,
                line: loc.line(),
                column: loc.column(),
                message,
            }
        }
        None => ConfigError::InvalidNoPosition { path, message: full },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("should be rejected").to_string()
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = parse("# nothing here\n\n").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert!(c.auth.is_none());
        c.check_exposure().expect("the loopback default needs no auth");
        assert!(c.discovery);
        assert_eq!(c.defaults.width, Dimension(640));
        assert_eq!(c.defaults.bitrate, Bitrate(1000));
        assert_eq!(c.idle, IdlePolicy::KeepEncoding);
        assert_eq!(c.negotiation_timeout, NegotiationTimeout(10));
    }

    #[test]
    fn original_cameras_dict_pins_devices() {
        let c = parse(
            "cameras:\n  camera1: {device: /dev/video0}\n  camera2: {device: /dev/video2, name: Back, bitrate: 1500}\n",
        )
        .unwrap();
        let cam2 = &c.cameras[&CameraId::new("camera2").unwrap()];
        assert_eq!(cam2.selector, Some(Selector::Device("/dev/video2".into())));
        assert_eq!(cam2.name.as_deref(), Some("Back"));
        assert_eq!(cam2.bitrate, Some(Bitrate(1500)));
        assert!(cam2.enabled);
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
listen: 127.0.0.1:9000
tls: {cert: /etc/edgecam/cert.pem, key: /etc/edgecam/key.pem}
discovery: false
idle: stop
negotiation_timeout: 30
ice:
  servers:
    - urls: ["stun:stun.example.org:3478"]
    - {urls: ["turn:turn.example.org:3478"], username: u, credential: p}
  local_addresses: [127.0.0.1]
defaults: {width: 1280, height: 720, fps: 25, bitrate: 2000, profile: x264}
cameras:
  door: {serial: "ABC123", name: Front door}
  garage: {path: "platform-xhci-hcd.0-usb-0:1:1.0", enabled: false}
  demo: {test_pattern: smpte}
  latency: {test_pattern: stamp}
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.tls.as_ref().unwrap().key, Path::new("/etc/edgecam/key.pem"));
        assert_eq!(c.idle, IdlePolicy::Stop);
        assert_eq!(c.negotiation_timeout, NegotiationTimeout(30));
        assert_eq!(c.ice.servers[1].username.as_deref(), Some("u"));
        assert!(!c.cameras[&CameraId::new("garage").unwrap()].enabled);
        assert_eq!(
            c.cameras[&CameraId::new("demo").unwrap()].selector,
            Some(Selector::TestPattern(TestPattern::Smpte))
        );
        let Some(Selector::TestPattern(stamp)) = c.cameras[&CameraId::new("latency").unwrap()].selector else {
            panic!("latency is not a test pattern");
        };
        assert!(stamp.stamps_time() && !TestPattern::Smpte.stamps_time());
    }

    #[test]
    fn adaptive_bitrate_bounds_and_encodings_per_camera() {
        let c = parse(
            "defaults: {min_bitrate: 100, max_encodings: 1}\ncameras:\n  a: {test_pattern: ball, bitrate: 800, min_bitrate: 800, max_encodings: 2}\n",
        )
        .unwrap();
        assert_eq!(
            (c.defaults.min_bitrate, c.defaults.max_encodings),
            (Bitrate(100), MaxEncodings(1))
        );
        let a = &c.cameras[&CameraId::new("a").unwrap()];
        assert_eq!(
            (a.min_bitrate, a.max_encodings),
            (Some(Bitrate(800)), Some(MaxEncodings(2)))
        );
        let fresh = parse("").unwrap().defaults;
        assert_eq!(
            (fresh.min_bitrate.0, fresh.max_encodings.0),
            (DEFAULT_MIN_BITRATE_KBPS, DEFAULT_MAX_ENCODINGS)
        );

        let e = error("cameras:\n  a:\n    test_pattern: ball\n    bitrate: 300\n    min_bitrate: 400\n");
        assert!(e.starts_with("test.yaml:2:3:"), "the camera's entry: {e}");
        assert!(e.contains("min_bitrate (400) must not be above bitrate (300)"), "{e}");
        let e = error("defaults:\n  max_encodings: 0\n");
        assert!(
            e.contains("test.yaml:2:3: defaults: max_encodings must be between 1 and 3, got 0"),
            "{e}"
        );
    }

    #[test]
    fn a_camera_pushes_over_whip_with_an_optional_token() {
        let c = parse(
            "cameras:\n  door:\n    test_pattern: ball\n    push: {whip: \"http://127.0.0.1:7080/whip/endpoint/door\", token: s3cret}\n  yard: {test_pattern: smpte, push: {whip: \"https://sfu.example.org/w\"}}\n",
        )
        .unwrap();
        let door = c.cameras[&CameraId::new("door").unwrap()].push.clone().unwrap();
        assert_eq!(door.whip, "http://127.0.0.1:7080/whip/endpoint/door");
        assert_eq!(door.token.as_deref(), Some("s3cret"));
        assert!(!format!("{door:?}").contains("s3cret"), "the token stays out of logs");
        let yard = c.cameras[&CameraId::new("yard").unwrap()].push.clone().unwrap();
        assert_eq!(yard.token, None);
        let e = error("cameras:\n  door:\n    push: {whip: \"ftp://x/y\"}\n");
        assert!(
            e.starts_with("test.yaml:3:") && e.contains("http:// or https://"),
            "{e}"
        );
        let e = error("cameras:\n  door:\n    push: {whip: \"http://x/\", tokn: a}\n");
        assert!(e.contains("unknown field `tokn`"), "{e}");
    }

    #[test]
    fn unknown_key_is_an_error_with_position() {
        let e = error("listen: 0.0.0.0:8080\nlisten_port: 9\n");
        assert!(e.starts_with("test.yaml:2:1: unknown field `listen_port`"), "{e}");
    }

    #[test]
    fn unknown_camera_key_is_an_error_with_position() {
        let e = error("cameras:\n  camera1:\n    device: /dev/video0\n    widht: 640\n");
        assert!(e.starts_with("test.yaml:4:"), "{e}");
        assert!(e.contains("unknown field `widht`"), "{e}");
    }

    #[test]
    fn bad_values_are_errors_with_position() {
        let e = error("defaults:\n  fps: 0\n");
        assert!(
            e.starts_with("test.yaml:2:3: defaults: fps must be between 1 and 240, got 0"),
            "{e}"
        );
        let e = error("listen: nowhere\n");
        assert!(e.starts_with("test.yaml:1:9:"), "{e}");
        let e = error("cameras:\n  \"bad id\": {device: /dev/video0}\n");
        assert!(e.starts_with("test.yaml:2:3:") && e.contains("must be 1-64"), "{e}");
        let e = error("cameras:\n  c: {test_pattern: plaid}\n");
        assert!(e.starts_with("test.yaml:2:") && e.contains("plaid"), "{e}");
        let e = error("idle: sometimes\n");
        assert!(e.starts_with("test.yaml:1:7:"), "{e}");
        let e = error("negotiation_timeout: 0\n");
        assert!(
            e.starts_with("test.yaml:1:1:") && e.contains("between 1 and 300"),
            "{e}"
        );
    }

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$Sgr8h0FlI1UoCiK9FhgBWb1ihnkTi4DNwB+MwxO0+Xk";

    #[test]
    fn auth_users_and_tokens_parse() {
        let c = parse(&format!(
            "listen: 0.0.0.0:8080\nauth:\n  users:\n    alice: {{hash: \"{HASH}\", api: true}}\n    bob: {{hash: \"{HASH}\", watch: [door]}}\n  tokens:\n    nvr: {{hash: \"{HASH}\", watch: all}}\n"
        ))
        .unwrap();
        let Some(Auth::Required(a)) = &c.auth else {
            panic!("no auth")
        };
        assert!(a.users["alice"].api && a.users["alice"].watch.allows("anything"));
        assert!(!a.users["bob"].api && a.users["bob"].watch.allows("door") && !a.users["bob"].watch.allows("yard"));
        assert_eq!(a.tokens["nvr"].watch, Watch::All);
        c.check_exposure().unwrap();
    }

    #[test]
    fn network_listen_needs_auth_or_explicit_none() {
        let e = parse("listen: 0.0.0.0:8080\n").unwrap().check_exposure().unwrap_err();
        assert!(e.contains("no `auth:` section"), "{e}");
        let c = parse("listen: 0.0.0.0:8080\nauth: none\n").unwrap();
        assert!(matches!(c.auth, Some(Auth::None)));
        c.check_exposure().unwrap();
        let e = parse("listen: 0.0.0.0:8080\nauth: {users: {}}\n")
            .unwrap()
            .check_exposure()
            .unwrap_err();
        assert!(e.contains("nobody could log in"), "{e}");
    }

    #[test]
    fn auth_mistakes_have_positions() {
        let e = error("auth: nobody\n");
        assert!(e.starts_with("test.yaml:1:") && e.contains("`none` or a table"), "{e}");
        let e = error("auth:\n  users:\n    alice: {hash: plaintext}\n");
        assert!(e.starts_with("test.yaml:3:") && e.contains("hash-password"), "{e}");
        let e = error(&format!(
            "auth:\n  users:\n    alice:\n      hash: \"{HASH}\"\n      pasword: x\n"
        ));
        assert!(
            e.starts_with("test.yaml:5:") && e.contains("unknown field `pasword`"),
            "{e}"
        );
        let e = error(&format!(
            "auth:\n  users:\n    alice: {{hash: \"{HASH}\", watch: [\"bad id\"]}}\n"
        ));
        assert!(e.starts_with("test.yaml:3:") && e.contains("must be 1-64"), "{e}");
    }

    #[test]
    fn conflicting_selectors_are_rejected() {
        let e = error("cameras:\n  c: {device: /dev/video0, serial: X}\n");
        assert!(e.contains("at most one of device, serial, path, test_pattern"), "{e}");
        let e = error("cameras:\n  c: {device: video0}\n");
        assert!(e.contains("absolute path"), "{e}");
    }

    #[test]
    fn yaml_syntax_error_has_position() {
        let e = error("cameras:\n  camera1: {device: /dev/video0\n");
        assert!(e.starts_with("test.yaml:"), "{e}");
        assert!(e.split(':').nth(1).unwrap().parse::<usize>().is_ok(), "{e}");
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::{mutated, yaml_lines};

    /// Every kind of key, nested as in a real file.
    const DENSE: &str = r#"listen: 0.0.0.0:8080
auth:
  users:
    admin: {hash: '$argon2id$v=19$m=19456,t=2,p=1$DZhH+/v5bnWrmQrCgYOI2Q$McfyGBSsornKOrM9/Qx+nLh+uNcUjt1uEYam6GzxMdE', watch: all, api: true}
    shop: {hash: '$argon2id$v=19$m=19456,t=2,p=1$DZhH+/v5bnWrmQrCgYOI2Q$McfyGBSsornKOrM9/Qx+nLh+uNcUjt1uEYam6GzxMdE', watch: [door, till]}
  tokens:
    nvr: {hash: '$argon2id$v=19$m=19456,t=2,p=1$4Gk8B7sPSNaYXj/kDlynhA$9HBo0rT7Vh2erMpr5Hux2WDAXjfxon0bCy5SxtKRo38', api: true}
server_names: [cams.local]
allowed_origins: ['https://nvr.example.org']
tls: {cert: /etc/edgecam/cert.pem, key: /etc/edgecam/key.pem}
discovery: false
idle: stop
negotiation_timeout: 20
ice:
  servers:
    - urls: ['turn:turn.example.org:3478']
      username: u
      credential: p
  local_addresses: [127.0.0.1]
  turn_secret: north
  turn_credential_ttl: 3600
defaults: {width: 1280, height: 720, fps: 15, bitrate: 2000, profile: x264}
cameras:
  camera1: {device: /dev/video0}
  door: {serial: ABC123, name: Door, bitrate: 1500}
  yard: {path: 'platform-xhci-hcd.0-usb-0:1:1.0', enabled: false}
  demo: {test_pattern: smpte}
"#;

    proptest! {
        /// A hostile or broken config file is an error that says where (`file:line:col`) or at
        /// least which file; a config that loads can be checked for exposure.
        #[test]
        fn fuzz_config_parse(text in prop_oneof![mutated(DENSE), mutated(include_str!("../packaging/debian/config.yaml"))]) {
            match Config::parse(&text, Path::new("fuzz.yaml")) {
                Ok(config) => {
                    let _ = config.check_exposure();
                }
                Err(e) => {
                    let shown = e.to_string();
                    prop_assert!(shown.starts_with("fuzz.yaml:"), "{}", shown);
                    prop_assert!(shown.len() > "fuzz.yaml: ".len(), "{}", shown);
                    if let ConfigError::Invalid { line, column, .. } = e {
                        prop_assert!(line >= 1 && column >= 1, "{}", shown);
                        prop_assert!(line <= yaml_lines(&text) + 1, "{}", shown);
                    }
                }
            }
        }
    }

    #[test]
    fn the_dense_seed_is_a_valid_config() {
        let c = Config::parse(DENSE, Path::new("dense.yaml")).unwrap();
        assert_eq!(c.cameras.len(), 4);
        assert!(c.ice.turn_secret.is_some() && c.tls.is_some());
    }
}
