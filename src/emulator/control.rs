//! The control-plane API (spec §8.2–§8.7) and GetIceServerConfig (§8.5), in the
//! AWS `rest-json` protocol: exact paths and member names, so that unmodified
//! AWS SDK clients pointed at the emulator work.

use super::channels::ChannelInfo;
use super::faults::Operation;
use super::http::{
    HttpError, HttpResponse, JsonObject, RequestHost, authenticate, empty_response, json_response, opt_array, opt_i64,
    opt_object, opt_str, parse_object, read_body, request_host, required_str,
};
use super::{Shared, bump, lock, sigv4, storage};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper::body::Incoming;
use hyper::{HeaderMap, Request, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tags a channel may carry (spec §7.2).
const MAX_TAGS: usize = 50;
/// ListSignalingChannels page size when `MaxResults` is absent (spec §8.7).
const DEFAULT_MAX_RESULTS: i64 = 500;
const NOT_FOUND: &str = "The requested channel is not found or not active.";

/// Serves one control-plane call: counts it, applies an injected error, checks
/// the signature, then runs the operation.
pub(super) async fn handle(shared: &Arc<Shared>, operation: Operation, request: Request<Incoming>) -> HttpResponse {
    bump(&shared.counters.control_plane[operation.index()], 1);
    let (parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let injected = lock(&shared.faults).control_plane_error(operation, Instant::now());
    if let Some((status, error_type)) = injected {
        bump(&shared.counters.control_plane_faults, 1);
        shared.log(format_args!("{} answered with an injected {status}", operation.name()));
        return HttpError::injected(status, error_type, "injected fault").into_response();
    }
    // Parsed once: the rate limit looks up the channel a call names, the
    // operation reads its members (a body that is not a JSON object is
    // refused after the rate limit, as an unnamed call).
    let input = parse_object(&body);
    let checked = authenticate(shared, &parts.method, &parts.uri, &parts.headers, &body)
        .and_then(|()| throttle(shared, operation, input.as_ref().ok()))
        .and(input);
    let answer = match operation {
        // 200 with an empty body; the offer follows through the data plane.
        Operation::JoinStorageSession | Operation::JoinStorageSessionAsViewer => checked
            .and_then(|input| storage::check_join(shared, &input, operation == Operation::JoinStorageSessionAsViewer))
            .map(|join| {
                storage::join(shared, join);
                None
            }),
        _ => checked.and_then(|input| answer(shared, operation, &parts.headers, &input)).map(Some),
    };
    match answer {
        Ok(Some(output)) => json_response(StatusCode::OK, &output),
        Ok(None) => empty_response(),
        Err(error) => {
            shared.log(format_args!("{} refused: {} {}", operation.name(), error.error_type, error.message));
            error.into_response()
        }
    }
}

/// Refuses a call over the control-plane rate limits (spec §7.2) while quotas
/// are on: per account, and per channel for a call that names an existing one.
fn throttle(shared: &Shared, operation: Operation, input: Option<&JsonObject>) -> Result<(), HttpError> {
    if !shared.limits().quotas {
        return Ok(());
    }
    let channel = input.and_then(|input| {
        let named = ["ChannelARN", "ResourceARN", "channelArn"].iter().find_map(|key| input.get(*key)?.as_str());
        let registry = lock(&shared.registry);
        match named {
            Some(arn) => registry.by_arn(arn).map(|info| info.arn),
            None => registry.channel_arn(input.get("ChannelName")?.as_str()?),
        }
    });
    if lock(&shared.control_rates).admit(operation, channel.as_deref(), Instant::now()) {
        return Ok(());
    }
    Err(HttpError::new(
        StatusCode::BAD_REQUEST,
        "ClientLimitExceededException",
        format!("Your request for {} has been throttled; retry later.", operation.name()),
    ))
}

/// The reply to an authenticated request for `operation`, from its headers and
/// its body's JSON object.
pub(super) fn answer(
    shared: &Shared,
    operation: Operation,
    headers: &HeaderMap,
    input: &JsonObject,
) -> Result<Value, HttpError> {
    let host = request_host(shared, headers);
    match operation {
        Operation::CreateSignalingChannel => create(shared, input),
        Operation::DescribeSignalingChannel => find(shared, input).map(|info| json!({"ChannelInfo": describe(&info)})),
        Operation::GetSignalingChannelEndpoint => endpoints(shared, input, &host),
        Operation::DeleteSignalingChannel => delete(shared, input),
        Operation::ListSignalingChannels => list(shared, input),
        Operation::DescribeMediaStorageConfiguration => find(shared, input).map(|info| {
            let storage = &info.media_storage;
            let status = if storage.enabled { "ENABLED" } else { "DISABLED" };
            let mut configuration = json!({ "Status": status });
            if let Some(stream) = &storage.stream_arn {
                configuration["StreamARN"] = json!(stream);
            }
            json!({ "MediaStorageConfiguration": configuration })
        }),
        Operation::UpdateMediaStorageConfiguration => update_media_storage(shared, input),
        Operation::JoinStorageSession | Operation::JoinStorageSessionAsViewer => {
            // Checked only: the join itself needs the emulator's tasks (see `handle`).
            storage::check_join(shared, input, operation == Operation::JoinStorageSessionAsViewer).map(|_| json!({}))
        }
        Operation::GetIceServerConfig => ice_servers(shared, input, &host),
        Operation::UpdateSignalingChannel => update(shared, input),
        Operation::TagResource => tag(shared, input),
        Operation::UntagResource => untag(shared, input),
        Operation::ListTagsForResource => list_tags(shared, input),
    }
}

/// `[a-zA-Z0-9_.-]{1,max}`: channel names, client ids.
fn is_name(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn constraint(value: &str, member: &str, rule: &str) -> HttpError {
    HttpError::invalid_argument(format!(
        "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {rule}"
    ))
}

pub(super) fn check_name(name: &str, member: &str) -> Result<(), HttpError> {
    if is_name(name, 256) {
        Ok(())
    } else {
        Err(constraint(name, member, "Member must match [a-zA-Z0-9_.-]+ and have length between 1 and 256"))
    }
}

pub(super) fn check_arn(arn: &str) -> Result<(), HttpError> {
    crate::protocol::validate_channel_arn(arn).map_err(|error| constraint(arn, "channelARN", &error.to_string()))
}

fn ttl_seconds(ttl: Duration) -> u64 {
    ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)
}

/// `ChannelInfo` of DescribeSignalingChannel and ListSignalingChannels.
fn describe(info: &ChannelInfo) -> Value {
    json!({
        "ChannelName": info.name,
        "ChannelARN": info.arn,
        "ChannelType": "SINGLE_MASTER",
        "ChannelStatus": "ACTIVE",
        "CreationTime": info.creation_time,
        "SingleMasterConfiguration": { "MessageTtlSeconds": ttl_seconds(info.message_ttl).max(1) },
        "Version": info.version,
    })
}

fn create(shared: &Shared, input: &JsonObject) -> Result<Value, HttpError> {
    let name = required_str(input, "ChannelName")?;
    check_name(name, "channelName")?;
    match opt_str(input, "ChannelType")? {
        None | Some("SINGLE_MASTER") => {}
        Some("FULL_MESH") => return Err(HttpError::invalid_argument("Only SINGLE_MASTER channels are supported.")),
        Some(other) => {
            return Err(constraint(
                other,
                "channelType",
                "Member must satisfy enum value set: [SINGLE_MASTER, FULL_MESH]",
            ));
        }
    }
    let message_ttl = requested_ttl(input)?.unwrap_or(shared.config.message_ttl);
    let tags = parse_tags(input)?;
    let limit = max_channels(&shared.config.region);
    if lock(&shared.registry).channel_count() >= limit {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "AccountChannelLimitExceededException",
            format!(
                "You have reached the maximum limit of {limit} signaling channels for this account in this region."
            ),
        ));
    }
    match shared.create_channel(name, message_ttl, tags) {
        Ok(arn) => Ok(json!({ "ChannelARN": arn })),
        Err(_) => Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "ResourceInUseException",
            format!("The signaling channel {name} already exists."),
        )),
    }
}

/// Channels per account and region (spec §7.2).
fn max_channels(region: &str) -> usize {
    if matches!(region, "us-east-1" | "us-west-2") { 10_000 } else { 5_000 }
}

/// `SingleMasterConfiguration.MessageTtlSeconds` (5-120) if given.
fn requested_ttl(input: &JsonObject) -> Result<Option<Duration>, HttpError> {
    let Some(configuration) = opt_object(input, "SingleMasterConfiguration")? else {
        return Ok(None);
    };
    let Some(seconds) = opt_i64(configuration, "MessageTtlSeconds")? else {
        return Ok(None);
    };
    if !(5..=120).contains(&seconds) {
        let rule = "Member must have value between 5 and 120";
        return Err(constraint(&seconds.to_string(), "singleMasterConfiguration.messageTtlSeconds", rule));
    }
    Ok(Some(Duration::from_secs(seconds.unsigned_abs())))
}

fn too_many_tags(count: usize) -> HttpError {
    HttpError::new(
        StatusCode::BAD_REQUEST,
        "TagsPerResourceExceededLimitException",
        format!("A resource can have at most {MAX_TAGS} tags; this request would make it {count}."),
    )
}

/// The service's pattern of tag keys and values.
const TAG_PATTERN: &str = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*";

/// Whether `text` matches [`TAG_PATTERN`]: letters, separators, numbers and `_.:/=+-@`.
fn is_tag_text(text: &str) -> bool {
    text.chars().all(|c| {
        c.is_alphabetic() || c.is_numeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
    })
}

pub(super) fn parse_tags(input: &JsonObject) -> Result<Vec<(String, String)>, HttpError> {
    let Some(items) = opt_array(input, "Tags")? else {
        return Ok(Vec::new());
    };
    if items.len() > MAX_TAGS {
        return Err(too_many_tags(items.len()));
    }
    let mut tags = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(tag) = item else {
            return Err(HttpError::serialization("each of Tags must be an object"));
        };
        let key = required_str(tag, "Key")?;
        let value = opt_str(tag, "Value")?.unwrap_or("");
        if key.is_empty() || key.chars().count() > 128 {
            return Err(constraint(key, "tags.member.key", "Member must have length between 1 and 128"));
        }
        if value.chars().count() > 256 {
            return Err(constraint(value, "tags.member.value", "Member must have length less than or equal to 256"));
        }
        if !is_tag_text(key) {
            return Err(constraint(
                key,
                "tags.member.key",
                &format!("Member must satisfy regular expression pattern: ^({TAG_PATTERN})$"),
            ));
        }
        if !is_tag_text(value) {
            return Err(constraint(
                value,
                "tags.member.value",
                &format!("Member must satisfy regular expression pattern: {TAG_PATTERN}"),
            ));
        }
        tags.push((key.to_owned(), value.to_owned()));
    }
    Ok(tags)
}

/// The channel named by `ChannelARN` or `ChannelName` (the ARN wins when both
/// are given, and then the name must match).
fn find(shared: &Shared, input: &JsonObject) -> Result<ChannelInfo, HttpError> {
    let name = opt_str(input, "ChannelName")?;
    let arn = opt_str(input, "ChannelARN")?;
    let registry = lock(&shared.registry);
    let found = match (arn, name) {
        (Some(arn), name) => {
            check_arn(arn)?;
            registry.by_arn(arn).filter(|info| name.is_none_or(|name| name == info.name))
        }
        (None, Some(name)) => {
            check_name(name, "channelName")?;
            registry.by_name(name)
        }
        (None, None) => return Err(HttpError::invalid_argument("Either ChannelName or ChannelARN is required.")),
    };
    found.ok_or_else(|| HttpError::not_found(NOT_FOUND))
}

fn by_arn(shared: &Shared, input: &JsonObject) -> Result<ChannelInfo, HttpError> {
    let arn = required_str(input, "ChannelARN")?;
    check_arn(arn)?;
    lock(&shared.registry).by_arn(arn).ok_or_else(|| HttpError::not_found(NOT_FOUND))
}

fn endpoints(shared: &Shared, input: &JsonObject, host: &RequestHost) -> Result<Value, HttpError> {
    let info = by_arn(shared, input)?;
    let configuration = opt_object(input, "SingleMasterChannelEndpointConfiguration")?;
    let mut protocols = vec!["WSS", "HTTPS"];
    let mut role = "MASTER";
    if let Some(configuration) = configuration {
        if let Some(items) = opt_array(configuration, "Protocols")? {
            if items.is_empty() || items.len() > 5 {
                return Err(constraint(
                    &format!("{items:?}"),
                    "singleMasterChannelEndpointConfiguration.protocols",
                    "Member must have length between 1 and 5",
                ));
            }
            protocols.clear();
            for item in items {
                let protocol =
                    item.as_str().ok_or_else(|| HttpError::serialization("each of Protocols must be a string"))?;
                match protocol {
                    "WSS" | "HTTPS" | "WEBRTC" if protocols.contains(&protocol) => {}
                    "WSS" | "HTTPS" => protocols.push(protocol),
                    "WEBRTC" if info.media_storage.enabled => protocols.push(protocol),
                    "WEBRTC" => {
                        return Err(HttpError::invalid_argument(
                            "The WEBRTC protocol needs a channel with media storage enabled; this channel has none.",
                        ));
                    }
                    other => {
                        return Err(constraint(
                            other,
                            "singleMasterChannelEndpointConfiguration.protocols.member",
                            "Member must satisfy enum value set: [WSS, HTTPS, WEBRTC]",
                        ));
                    }
                }
            }
        }
        match opt_str(configuration, "Role")? {
            None => {}
            Some(value @ ("MASTER" | "VIEWER")) => role = value,
            Some(other) => {
                return Err(constraint(
                    other,
                    "singleMasterChannelEndpointConfiguration.role",
                    "Member must satisfy enum value set: [MASTER, VIEWER]",
                ));
            }
        }
    }
    let (ws, http) = if shared.is_tls() { ("wss", "https") } else { ("ws", "http") };
    let prefix = if role == "MASTER" { "m" } else { "v" };
    let list: Vec<Value> = protocols
        .iter()
        .map(|protocol| {
            let endpoint = match *protocol {
                "WSS" => format!("{ws}://{}/{prefix}-{}", host.authority, info.endpoint_label),
                "WEBRTC" => format!("{http}://{}/w-{}", host.authority, info.endpoint_label),
                _ => format!("{http}://{}/r-{}", host.authority, info.endpoint_label),
            };
            json!({ "Protocol": protocol, "ResourceEndpoint": endpoint })
        })
        .collect();
    Ok(json!({ "ResourceEndpointList": list }))
}

/// Channels with media storage enabled per account (spec §7.2).
const MAX_STORAGE_CHANNELS: usize = 100;

/// UpdateMediaStorageConfiguration (spec §8.7): `Status` ENABLED (with a
/// `StreamARN`, not enabled on another channel; at most 100 channels) or
/// DISABLED (which ends the channel's storage session).
fn update_media_storage(shared: &Shared, input: &JsonObject) -> Result<Value, HttpError> {
    let info = by_arn(shared, input)?;
    let configuration = opt_object(input, "MediaStorageConfiguration")?
        .ok_or_else(|| HttpError::invalid_argument("MediaStorageConfiguration is required"))?;
    let enabled = match required_str(configuration, "Status")? {
        "ENABLED" => true,
        "DISABLED" => false,
        other => {
            return Err(constraint(
                other,
                "mediaStorageConfiguration.status",
                "Member must satisfy enum value set: [ENABLED, DISABLED]",
            ));
        }
    };
    let stream_arn = opt_str(configuration, "StreamARN")?;
    if let Some(stream) = stream_arn {
        crate::protocol::validate_channel_arn(stream).map_err(|_| {
            let rule = "Member must match arn:[a-z\\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+ \
                        and have length between 1 and 1024";
            constraint(stream, "mediaStorageConfiguration.streamARN", rule)
        })?;
    }
    if enabled && stream_arn.is_none() {
        return Err(HttpError::invalid_argument("StreamARN is required when Status is ENABLED."));
    }
    let mut registry = lock(&shared.registry);
    if enabled {
        let others: Vec<ChannelInfo> =
            registry.list().into_iter().filter(|other| other.arn != info.arn && other.media_storage.enabled).collect();
        if others.iter().any(|other| other.media_storage.stream_arn.as_deref() == stream_arn) {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "ResourceInUseException",
                "The StreamARN is already mapped to another signaling channel.",
            ));
        }
        if others.len() >= MAX_STORAGE_CHANNELS {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "ClientLimitExceededException",
                format!("At most {MAX_STORAGE_CHANNELS} signaling channels may have media storage enabled."),
            ));
        }
    }
    registry
        .modify(&info.arn, |info| {
            info.media_storage.enabled = enabled;
            if let Some(stream) = stream_arn {
                info.media_storage.stream_arn = Some(stream.to_owned());
            }
        })
        .ok_or_else(|| HttpError::not_found(NOT_FOUND))?;
    drop(registry);
    if !enabled {
        storage::end_channel(shared, &info.arn);
    }
    Ok(json!({}))
}

fn delete(shared: &Shared, input: &JsonObject) -> Result<Value, HttpError> {
    let info = by_arn(shared, input)?;
    if let Some(version) = opt_str(input, "CurrentVersion")?
        && version != info.version
    {
        return Err(version_mismatch(version, &info.version));
    }
    if !shared.delete_channel(&info.arn) {
        return Err(HttpError::not_found(NOT_FOUND));
    }
    Ok(json!({}))
}

fn version_mismatch(given: &str, current: &str) -> HttpError {
    HttpError::new(
        StatusCode::BAD_REQUEST,
        "VersionMismatchException",
        format!("The supplied version {given} does not match the current version {current}."),
    )
}

/// UpdateSignalingChannel (spec §8.7): `CurrentVersion` must match; a new
/// `MessageTtlSeconds` applies to messages stored from now on (those already
/// stored keep their expiry); the channel gets a new version.
fn update(shared: &Shared, input: &JsonObject) -> Result<Value, HttpError> {
    let arn = required_str(input, "ChannelARN")?;
    check_arn(arn)?;
    let given = required_str(input, "CurrentVersion")?;
    if given.is_empty() || given.len() > 64 || !given.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(constraint(
            given,
            "currentVersion",
            "Member must match [a-zA-Z0-9]+ and have length between 1 and 64",
        ));
    }
    let ttl = requested_ttl(input)?;
    let changed = lock(&shared.registry).modify(arn, |info| {
        if info.version != given {
            return Err(version_mismatch(given, &info.version));
        }
        if let Some(ttl) = ttl {
            info.message_ttl = ttl;
        }
        info.version = next_version(&info.version);
        Ok(())
    });
    changed.ok_or_else(|| HttpError::not_found(NOT_FOUND))??;
    Ok(json!({}))
}

/// A new `[a-zA-Z0-9]{20}` version, different from `current`.
fn next_version(current: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    (current, super::epoch_millis()).hash(&mut hasher);
    let version = format!("{:016x}{:04x}", hasher.finish(), hasher.finish() >> 48);
    if version == current { format!("{}0", &version[..19]) } else { version }
}

fn resource(shared: &Shared, input: &JsonObject) -> Result<String, HttpError> {
    let arn = required_str(input, "ResourceARN")?;
    check_arn(arn).map_err(|_| constraint(arn, "resourceARN", "Member must be a signaling channel ARN"))?;
    lock(&shared.registry).by_arn(arn).map(|info| info.arn).ok_or_else(|| HttpError::not_found(NOT_FOUND))
}

/// TagResource: adds tags or replaces the values of existing keys; at most
/// 50 tags on the channel afterwards.
fn tag(shared: &Shared, input: &JsonObject) -> Result<Value, HttpError> {
    let arn = resource(shared, input)?;
    let tags = parse_tags(input)?;
    if tags.is_empty() {
        return Err(constraint("[]", "tags", "Member must have length between 1 and 50"));
    }
    let changed = lock(&shared.registry).modify(&arn, |info| {
        let mut merged = info.tags.clone();
        for (key, value) in tags {
            match merged.iter_mut().find(|(existing, _)| *existing == key) {
                Some(slot) => slot.1 = value,
                None => merged.push((key, value)),
            }
        }
        if merged.len() > MAX_TAGS {
            return Err(too_many_tags(merged.len()));
        }
        info.tags = merged;
        Ok(())
    });
    changed.ok_or_else(|| HttpError::not_found(NOT_FOUND))??;
    Ok(json!({}))
}

/// UntagResource: removes the listed keys (unknown keys are ignored).
fn untag(shared: &Shared, input: &JsonObject) -> Result<Value, HttpError> {
    let arn = resource(shared, input)?;
    let keys = opt_array(input, "TagKeyList")?.ok_or_else(|| HttpError::invalid_argument("TagKeyList is required."))?;
    if keys.is_empty() || keys.len() > MAX_TAGS {
        return Err(constraint(&keys.len().to_string(), "tagKeyList", "Member must have length between 1 and 50"));
    }
    let mut remove = Vec::with_capacity(keys.len());
    for key in keys {
        let key = key.as_str().ok_or_else(|| HttpError::serialization("each of TagKeyList must be a string"))?;
        if key.is_empty() || key.chars().count() > 128 {
            return Err(constraint(key, "tagKeyList.member", "Member must have length between 1 and 128"));
        }
        remove.push(key);
    }
    lock(&shared.registry)
        .modify(&arn, |info| info.tags.retain(|(key, _)| !remove.contains(&key.as_str())))
        .ok_or_else(|| HttpError::not_found(NOT_FOUND))?;
    Ok(json!({}))
}

/// ListTagsForResource: every tag as a `{key: value}` map (at most 50, so
/// one page: no `NextToken`).
fn list_tags(shared: &Shared, input: &JsonObject) -> Result<Value, HttpError> {
    let arn = resource(shared, input)?;
    if let Some(token) = opt_str(input, "NextToken")?
        && !token.is_empty()
    {
        return Err(HttpError::invalid_argument("The NextToken is invalid."));
    }
    let info = lock(&shared.registry).by_arn(&arn).ok_or_else(|| HttpError::not_found(NOT_FOUND))?;
    let tags: serde_json::Map<String, Value> =
        info.tags.into_iter().map(|(key, value)| (key, Value::String(value))).collect();
    Ok(json!({ "Tags": tags }))
}

fn list(shared: &Shared, input: &JsonObject) -> Result<Value, HttpError> {
    let max_results = opt_i64(input, "MaxResults")?.unwrap_or(DEFAULT_MAX_RESULTS);
    if !(1..=10_000).contains(&max_results) {
        return Err(constraint(&max_results.to_string(), "maxResults", "Member must have value between 1 and 10000"));
    }
    let after = match opt_str(input, "NextToken")? {
        None => None,
        Some(token) => {
            let decoded = STANDARD.decode(token).ok().and_then(|bytes| String::from_utf8(bytes).ok());
            Some(decoded.ok_or_else(|| HttpError::invalid_argument("The NextToken is invalid."))?)
        }
    };
    let mut prefix = "";
    if let Some(condition) = opt_object(input, "ChannelNameCondition")? {
        match opt_str(condition, "ComparisonOperator")? {
            None | Some("BEGINS_WITH") => {}
            Some(other) => {
                return Err(constraint(
                    other,
                    "channelNameCondition.comparisonOperator",
                    "Member must satisfy enum value set: [BEGINS_WITH]",
                ));
            }
        }
        prefix = opt_str(condition, "ComparisonValue")?.unwrap_or("");
    }
    let matching: Vec<ChannelInfo> = lock(&shared.registry)
        .list()
        .into_iter()
        .filter(|info| info.name.starts_with(prefix) && after.as_ref().is_none_or(|after| info.name > *after))
        .collect();
    let page_len = usize::try_from(max_results).unwrap_or(usize::MAX).min(matching.len());
    let page = &matching[..page_len];
    let mut output = json!({ "ChannelInfoList": page.iter().map(describe).collect::<Vec<_>>() });
    if page_len < matching.len()
        && let Some(last) = page.last()
    {
        output["NextToken"] = json!(STANDARD.encode(&last.name));
    }
    Ok(output)
}

fn ice_servers(shared: &Shared, input: &JsonObject, host: &RequestHost) -> Result<Value, HttpError> {
    let info = by_arn(shared, input)?;
    if let Some(client_id) = opt_str(input, "ClientId")? {
        check_name(client_id, "clientId")?;
    }
    match opt_str(input, "Service")? {
        None | Some("TURN") => {}
        Some(other) => return Err(constraint(other, "service", "Member must satisfy enum value set: [TURN]")),
    }
    if let Some(username) = opt_str(input, "Username")?
        && (username.is_empty() || username.len() > 256)
    {
        return Err(constraint(username, "username", "Member must have length between 1 and 256"));
    }
    let ttl = shared.config.ice_server_ttl.as_secs().max(1);
    let expiry = shared.now_epoch().saturating_add_unsigned(ttl);
    let username = format!("{expiry}:{}", STANDARD.encode(format!("v1:{}", info.arn)));
    let (hostname, port) = (&host.hostname, host.port);
    let servers: Vec<Value> = (0..2)
        .map(|index| {
            let password = STANDARD.encode(sigv4::hmac(shared.turn_secret.as_bytes(), &format!("{username}#{index}")));
            json!({
                "Uris": [
                    format!("turn:{hostname}:{port}?transport=udp"),
                    format!("turns:{hostname}:{port}?transport=udp"),
                    format!("turns:{hostname}:{port}?transport=tcp"),
                ],
                "Username": username,
                "Password": password,
                "Ttl": ttl,
            })
        })
        .collect();
    Ok(json!({ "IceServerList": servers }))
}
