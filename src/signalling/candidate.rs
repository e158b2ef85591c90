//! A client's trickled ICE candidate, checked against the candidate-attribute grammar (RFC 8839
//! 5.1) before it reaches libnice. libnice drops a malformed candidate without a word, so without
//! this check a bad one would get no `error`; and a candidate with a line break would be pasted
//! into webrtcbin's remote SDP as extra lines.

/// Why `candidate` (the value of an `a=candidate:` line, with its `candidate:` prefix) is not one,
/// or `Ok` for a candidate or the empty end-of-candidates marker.
pub fn check(candidate: &str) -> Result<(), String> {
    if candidate.is_empty() {
        return Ok(());
    }
    if let Some(bad) = candidate.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return Err(format!("candidate has a character not allowed in SDP ({bad:?})"));
    }
    let Some(rest) = candidate.strip_prefix("candidate:") else {
        return Err("a candidate starts with \"candidate:\"".into());
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let [foundation, component, transport, priority, address, port, typ, kind, extensions @ ..] = fields.as_slice()
    else {
        return Err(format!(
            "candidate has {} fields; it needs foundation, component, transport, priority, address, port, typ and a type",
            fields.len()
        ));
    };
    let digits = |s: &str, max_len: usize| !s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit());
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let problem = if foundation.is_empty()
        || foundation.len() > 32
        || !foundation
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    {
        "foundation"
    } else if !digits(component, 3) {
        "component id"
    } else if !token(transport) {
        "transport"
    } else if !digits(priority, 10) || priority.parse::<u64>().map_or(true, |p| p > u64::from(u32::MAX)) {
        "priority"
    } else if !address
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":.-_%".contains(&b))
        || address.is_empty()
    {
        "address"
    } else if !digits(port, 5) || port.parse::<u32>().map_or(true, |p| p > 65535) {
        "port"
    } else if *typ != "typ" || !token(kind) {
        "type (typ host, srflx, prflx or relay)"
    } else if extensions.iter().any(|e| e.is_empty()) {
        "extensions (doubled space)"
    } else {
        return Ok(());
    };
    Err(format!("candidate has a malformed {problem}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_browsers_and_webrtcbin_send_is_accepted() {
        for c in [
            // Chromium: mDNS host, srflx with related address, TCP with tcptype, and its extensions.
            "candidate:2930135047 1 udp 2113937151 5f1e6c2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b.local 58481 typ host generation 0 ufrag Kq4f network-cost 999",
            "candidate:842163049 1 udp 1677729535 203.0.113.7 61034 typ srflx raddr 0.0.0.0 rport 0 generation 0 ufrag Kq4f network-cost 999",
            "candidate:1 1 tcp 1518280447 192.168.1.2 9 typ host tcptype active generation 0",
            // Firefox, libnice, an IPv6 relay.
            "candidate:0 1 UDP 2122252543 10.77.0.2 42379 typ host",
            "candidate:1 1 UDP 2015363327 127.0.0.1 50000 typ host",
            "candidate:5 1 UDP 16777215 2001:db8::1 3478 typ relay raddr 2001:db8::2 rport 51000",
            "candidate:a+b/C 2 UDP 1 fe80::1%eth0 1 typ prflx",
            "",
        ] {
            assert_eq!(check(c), Ok(()), "{c}");
        }
    }

    #[test]
    fn malformed_candidates_say_what_is_wrong() {
        let cases = [
            ("hello", "starts with"),
            ("candidate:1 1 UDP 1 1.2.3.4 5 typ", "fields"),
            ("candidate:1 1 UDP 1 1.2.3.4 5 typ host\r\na=ice-pwd:x", "character"),
            ("candidate:1 1 UDP 1 1.2.3.4 5 typ h\u{f6}st", "character"),
            ("candidate:1 1 UDP 99999999999 1.2.3.4 5 typ host", "priority"),
            ("candidate:1 1 UDP 1 1.2.3.4 70000 typ host", "port"),
            ("candidate:1 x UDP 1 1.2.3.4 5 typ host", "component"),
            ("candidate:1 1 UDP 1 1.2.3.4/24 5 typ host", "address"),
            ("candidate:1 1 UDP 1 1.2.3.4 5 type host", "type"),
            ("candidate:{} 1 UDP 1 1.2.3.4 5 typ host", "foundation"),
            ("candidate:1 1 UDP 1 1.2.3.4 5 typ host  generation 0", "extensions"),
        ];
        for (c, why) in cases {
            let e = check(c).expect_err(c);
            assert!(e.contains(why), "{c}: {e}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::mutated;

    proptest! {
        /// Whatever a client trickles is a candidate or an error that says which part is wrong;
        /// nothing with a line break or a control character gets through.
        #[test]
        fn fuzz_candidate_check(c in prop_oneof![
            mutated("candidate:842163049 1 udp 1677729535 203.0.113.7 61034 typ srflx raddr 0.0.0.0 rport 0 generation 0"),
            mutated("candidate:1 1 UDP 2015363327 127.0.0.1 50000 typ host"),
        ]) {
            match check(&c) {
                Ok(()) => prop_assert!(c.is_empty() || (c.starts_with("candidate:") && c.bytes().all(|b| (b' '..=b'~').contains(&b)))),
                Err(e) => prop_assert!(e.starts_with("candidate") || e.starts_with("a candidate"), "{}", e),
            }
        }
    }
}
