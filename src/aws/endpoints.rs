//! Control-plane and STUN host names for a region (spec §1.1, §1.5).

use super::AwsError;

/// Which variant of the regional endpoints to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointVariant {
    /// FIPS 140 validated endpoints (`kinesisvideo-fips.…`, `stuns:`).
    pub fips: bool,
    /// IPv4 + IPv6 endpoints (`….api.aws`, China `….api.amazonwebservices.com.cn`).
    pub dual_stack: bool,
}

/// The DNS suffixes of the partition a region belongs to: (plain, dual-stack).
fn dns_suffixes(region: &str) -> (&'static str, Option<&'static str>) {
    if region.starts_with("cn-") {
        ("amazonaws.com.cn", Some("api.amazonwebservices.com.cn"))
    } else if region.starts_with("us-isob-") {
        ("sc2s.sgov.gov", None)
    } else if region.starts_with("us-iso-") {
        ("c2s.ic.gov", None)
    } else {
        ("amazonaws.com", Some("api.aws"))
    }
}

/// Checks a region name: `[a-z0-9-]+` (spec §1.6), not starting or ending with `-`.
pub fn validate_region(region: &str) -> Result<(), AwsError> {
    let ok = !region.is_empty()
        && region.len() <= 64
        && region.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if ok { Ok(()) } else { Err(AwsError::Config(format!("region {region:?} must match [a-z0-9-]+"))) }
}

fn suffix(region: &str, variant: EndpointVariant) -> Result<&'static str, AwsError> {
    validate_region(region)?;
    let (plain, dual) = dns_suffixes(region);
    if variant.dual_stack {
        dual.ok_or_else(|| AwsError::Config(format!("region {region} has no dual-stack endpoints")))
    } else {
        Ok(plain)
    }
}

/// `https://kinesisvideo[-fips].{region}.{suffix}` for the region's partition.
pub fn control_plane_url(region: &str, variant: EndpointVariant) -> Result<String, AwsError> {
    let suffix = suffix(region, variant)?;
    let service = if variant.fips { "kinesisvideo-fips" } else { "kinesisvideo" };
    Ok(format!("https://{service}.{region}.{suffix}"))
}

/// The control-plane URL: `override_url` when given (e.g. a local emulator,
/// `http://127.0.0.1:PORT`; a trailing `/` is dropped), else the regional one.
/// Like the service's endpoint rules, an override cannot be combined with FIPS
/// or dual-stack.
pub fn resolve_control_plane(
    region: &str,
    variant: EndpointVariant,
    override_url: Option<&str>,
) -> Result<String, AwsError> {
    let Some(url) = override_url.map(str::trim).filter(|u| !u.is_empty()) else {
        return control_plane_url(region, variant);
    };
    validate_region(region)?;
    if variant.fips || variant.dual_stack {
        return Err(AwsError::Config(
            "a custom control-plane endpoint cannot be combined with FIPS or dual-stack".into(),
        ));
    }
    let has_scheme = url.starts_with("https://") || url.starts_with("http://");
    let host = url.split_once("://").map_or("", |(_, rest)| rest.split('/').next().unwrap_or(""));
    if !has_scheme || host.is_empty() || url.contains(['?', '#', ' ']) {
        return Err(AwsError::Config(format!(
            "control-plane endpoint {url:?} must be an http:// or https:// URL without a query string"
        )));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The KVS STUN server of a region (built by clients, no API returns it):
/// `stun:stun.kinesisvideo.{region}.{suffix}:443`, FIPS
/// `stuns:stun.kinesisvideo-fips.{region}.{suffix}:443`.
pub fn stun_url(region: &str, variant: EndpointVariant) -> Result<String, AwsError> {
    let suffix = suffix(region, variant)?;
    Ok(if variant.fips {
        format!("stuns:stun.kinesisvideo-fips.{region}.{suffix}:443")
    } else {
        format!("stun:stun.kinesisvideo.{region}.{suffix}:443")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: EndpointVariant = EndpointVariant { fips: false, dual_stack: false };
    const FIPS: EndpointVariant = EndpointVariant { fips: true, dual_stack: false };
    const DUAL: EndpointVariant = EndpointVariant { fips: false, dual_stack: true };
    const BOTH: EndpointVariant = EndpointVariant { fips: true, dual_stack: true };

    #[test]
    fn control_plane_urls() {
        let url = |region, variant| control_plane_url(region, variant).unwrap();
        assert_eq!(url("us-west-2", PLAIN), "https://kinesisvideo.us-west-2.amazonaws.com");
        assert_eq!(url("us-gov-west-1", FIPS), "https://kinesisvideo-fips.us-gov-west-1.amazonaws.com");
        assert_eq!(url("us-west-2", DUAL), "https://kinesisvideo.us-west-2.api.aws");
        assert_eq!(url("us-east-1", BOTH), "https://kinesisvideo-fips.us-east-1.api.aws");
        assert_eq!(url("cn-north-1", PLAIN), "https://kinesisvideo.cn-north-1.amazonaws.com.cn");
        assert_eq!(url("cn-northwest-1", DUAL), "https://kinesisvideo.cn-northwest-1.api.amazonwebservices.com.cn");
        assert_eq!(url("us-iso-east-1", PLAIN), "https://kinesisvideo.us-iso-east-1.c2s.ic.gov");
        assert_eq!(url("us-isob-east-1", PLAIN), "https://kinesisvideo.us-isob-east-1.sc2s.sgov.gov");
        assert!(matches!(control_plane_url("us-iso-east-1", DUAL), Err(AwsError::Config(_))));
        for bad in ["", "US-WEST-2", "us_west_2", "-us", "us-west-2.evil.com"] {
            assert!(matches!(control_plane_url(bad, PLAIN), Err(AwsError::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn overrides() {
        assert_eq!(
            resolve_control_plane("us-west-2", PLAIN, Some("http://127.0.0.1:4566/")).unwrap(),
            "http://127.0.0.1:4566"
        );
        assert_eq!(
            resolve_control_plane("us-west-2", PLAIN, Some("")).unwrap(),
            "https://kinesisvideo.us-west-2.amazonaws.com"
        );
        assert_eq!(
            resolve_control_plane("us-west-2", FIPS, None).unwrap(),
            "https://kinesisvideo-fips.us-west-2.amazonaws.com"
        );
        for bad in ["ftp://h", "http://", "https://h/?x=1", "localhost:80"] {
            assert!(matches!(resolve_control_plane("us-west-2", PLAIN, Some(bad)), Err(AwsError::Config(_))), "{bad}");
        }
        assert!(matches!(resolve_control_plane("us-west-2", FIPS, Some("https://h")), Err(AwsError::Config(_))));
        assert!(matches!(resolve_control_plane("us-west-2", DUAL, Some("https://h")), Err(AwsError::Config(_))));
    }

    #[test]
    fn stun_urls_match_the_js_sdk() {
        // JS SDK `fips.spec.ts` vectors.
        assert_eq!(
            stun_url("us-gov-east-1", FIPS).unwrap(),
            "stuns:stun.kinesisvideo-fips.us-gov-east-1.amazonaws.com:443"
        );
        assert_eq!(stun_url("us-west-1", PLAIN).unwrap(), "stun:stun.kinesisvideo.us-west-1.amazonaws.com:443");
        assert_eq!(stun_url("us-gov-east-1", BOTH).unwrap(), "stuns:stun.kinesisvideo-fips.us-gov-east-1.api.aws:443");
        assert_eq!(stun_url("us-west-1", DUAL).unwrap(), "stun:stun.kinesisvideo.us-west-1.api.aws:443");
        // China (C SDK postfix constants).
        assert_eq!(stun_url("cn-north-1", PLAIN).unwrap(), "stun:stun.kinesisvideo.cn-north-1.amazonaws.com.cn:443");
        assert_eq!(
            stun_url("cn-north-1", DUAL).unwrap(),
            "stun:stun.kinesisvideo.cn-north-1.api.amazonwebservices.com.cn:443"
        );
    }
}
