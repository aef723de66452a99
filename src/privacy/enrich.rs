//! Enrichment at the door (DESIGN §17): an IP address becomes its country, a user agent its
//! browser, operating system and device class; the raw values are never stored. Used by the
//! PII actions `IP_COUNTRY` and `USER_AGENT` of file loads and by the collector for
//! `context.ip` and `context.userAgent`.

use std::net::IpAddr;

/// The ISO 3166 alpha-2 country of `ip` from Regional Internet Registry data compiled into the
/// binary; `None` for a private, loopback, link-local, reserved or unknown address, and for
/// text that is not an address.
pub fn ip_country(ip: &str) -> Option<String> {
    let ip: IpAddr = ip.trim().parse().ok()?;
    let special = match ip {
        IpAddr::V4(a) => {
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_documentation()
                || a.octets()[0] >= 224
                || (a.octets()[0] == 100 && (64..128).contains(&a.octets()[1]))
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xff00) == 0xff00
                || (s[0] == 0x2001 && s[1] == 0x0db8)
        }
    };
    if special {
        return None;
    }
    iptocc::country_code(ip).map(str::to_string)
}

/// What a user agent says: browser name, operating system, and device class (`desktop`,
/// `mobile`, `bot` or `other`); `None` where it says nothing known.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Agent {
    pub browser: Option<String>,
    pub os: Option<String>,
    pub device: Option<String>,
}

/// Read a user agent string.
pub fn user_agent(ua: &str) -> Agent {
    let known = |s: &str| (s != "UNKNOWN" && !s.is_empty()).then(|| s.to_string());
    if ua.trim().is_empty() {
        return Agent::default();
    }
    match woothee::parser::Parser::new().parse(ua.trim()) {
        Some(r) => Agent {
            browser: known(r.name),
            os: known(r.os),
            device: Some(
                match r.category {
                    "pc" => "desktop",
                    "smartphone" | "mobilephone" => "mobile",
                    "crawler" => "bot",
                    _ => "other",
                }
                .to_string(),
            ),
        },
        None => Agent {
            device: Some("other".into()),
            ..Agent::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countries_of_public_addresses_only() {
        assert_eq!(ip_country("8.8.8.8").as_deref(), Some("US"));
        assert_eq!(
            ip_country(" 2a00:1450:4001:80b::200e ").as_deref(),
            Some("IE")
        );
        for private in [
            "10.1.2.3",
            "192.168.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::1",
            "not an ip",
            "",
        ] {
            assert_eq!(ip_country(private), None, "{private}");
        }
    }

    #[test]
    fn agents_become_browser_os_and_device_class() {
        let chrome = user_agent(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        );
        assert_eq!(chrome.browser.as_deref(), Some("Chrome"));
        assert_eq!(chrome.os.as_deref(), Some("Windows 10"));
        assert_eq!(chrome.device.as_deref(), Some("desktop"));
        let iphone = user_agent(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
        );
        assert_eq!(iphone.device.as_deref(), Some("mobile"));
        assert_eq!(iphone.os.as_deref(), Some("iPhone"));
        let bot =
            user_agent("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
        assert_eq!(bot.device.as_deref(), Some("bot"));
        assert_eq!(
            user_agent("curl-ish nonsense").device.as_deref(),
            Some("other")
        );
        assert_eq!(user_agent(""), Agent::default());
    }
}
