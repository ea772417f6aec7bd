//! Drop-in endpoints for clients written against rembg (`POST /api/remove`) and
//! remove.bg (`POST /v1.0/removebg`): each request is translated into the pods' own
//! `POST /v1/remove` (raw image, query options), goes through the same queue, and the
//! answer is translated back, errors in the shape those clients parse.
//!
//! rembg: multipart field `file`; `om` (only the mask), `bgc` (`R,G,B,A` background);
//! other rembg options (model, alpha matting) name its own models and are ignored.
//! Errors are FastAPI's `{"detail": "..."}`.
//!
//! remove.bg: multipart field `image_file` or text field `image_file_b64`; `format`
//! (`auto`, `png`, `jpg`), `bg_color` (hex), `channels` (`rgba`, `alpha`), `size`
//! mapped onto `max_dimension`; other options are ignored. Errors are
//! `{"errors": [{"title", "code"}]}`.

use std::collections::HashMap;
use std::io::Cursor;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;

use crate::Error;

/// rembg's endpoint.
pub const REMBG_PATH: &str = "/api/remove";
/// remove.bg's endpoint.
pub const REMOVE_BG_PATH: &str = "/v1.0/removebg";

/// Which drop-in API a request came in through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Rembg,
    RemoveBg,
}

/// The image encoding the client gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// The pod's PNG as it is.
    Png,
    /// A JPEG: the pod's own for a composite, the pod's PNG mask re-encoded for
    /// `channels=alpha` (remove.bg `format=jpg`, or `auto` without
    /// transparency).
    Jpeg,
}

/// A drop-in request as the pods' API sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// `/v1/remove?…`
    pub path_and_query: String,
    pub image: Bytes,
    pub encoding: Encoding,
}

/// The fields of a form: text fields by name, file fields by name.
#[derive(Debug, Default)]
pub struct Form {
    pub text: HashMap<String, String>,
    pub files: HashMap<String, Bytes>,
}

/// Reads a `multipart/form-data` body already held in memory.
pub async fn parse_form(headers: &HeaderMap, body: Bytes) -> Result<Form, Error> {
    let declared = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(declared).map_err(|_| {
        Error::BadRequest(format!("Content-Type `{declared}` is not multipart/form-data with a boundary"))
    })?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = Form::default();
    let malformed = |error: multer::Error| Error::BadRequest(format!("malformed multipart body: {error}"));
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        let Some(name) = field.name().map(str::to_owned) else { continue };
        if field.file_name().is_some() || field.content_type().is_some_and(|mime| mime.type_() != "text") {
            form.files.insert(name, field.bytes().await.map_err(malformed)?);
        } else {
            form.text.insert(name, field.text().await.map_err(malformed)?);
        }
    }
    Ok(form)
}

/// rembg's `POST /api/remove`.
pub fn rembg(form: Form) -> Result<Translated, Error> {
    let Form { text, mut files } = form;
    let image = files
        .remove("file")
        .or_else(|| text.get("file").map(|value| Bytes::from(value.clone().into_bytes())))
        .ok_or_else(|| Error::BadRequest("the form has no field `file` with the image".into()))?;
    let only_mask = match text.get("om") {
        None => false,
        Some(value) => parse_bool(value).ok_or_else(|| Error::BadRequest(format!("om `{value}` is not a boolean")))?,
    };
    let mut query = Vec::new();
    if only_mask {
        query.push(("format", "mask".to_owned()));
    } else if let Some(bgc) = text.get("bgc")
        && let Some(hex) = rembg_background(bgc)?
    {
        query.push(("bg_color", hex));
    }
    Ok(Translated { path_and_query: native_path(&query), image, encoding: Encoding::Png })
}

/// rembg's `bgc`: `R,G,B,A` in 0–255; a transparent one (A = 0) is no background.
fn rembg_background(bgc: &str) -> Result<Option<String>, Error> {
    let channels: Vec<u8> = bgc
        .split(',')
        .map(|part| part.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| Error::BadRequest(format!("bgc `{bgc}` is not four numbers 0-255 as R,G,B,A")))?;
    match channels.as_slice() {
        [_, _, _, 0] => Ok(None),
        [r, g, b, _] => Ok(Some(format!("{r:02x}{g:02x}{b:02x}"))),
        _ => Err(Error::BadRequest(format!("bgc `{bgc}` is not four numbers 0-255 as R,G,B,A"))),
    }
}

/// FastAPI's booleans.
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// remove.bg's `POST /v1.0/removebg`.
pub fn remove_bg(form: Form) -> Result<Translated, Error> {
    let Form { text, mut files } = form;
    let image = match (files.remove("image_file"), text.get("image_file_b64")) {
        (Some(file), _) => file,
        (None, Some(encoded)) => decode_base64(encoded)?,
        (None, None) => {
            return Err(Error::BadRequest(
                "the form has neither `image_file` nor `image_file_b64`; `image_url` is not supported".into(),
            ));
        }
    };
    let field = |name: &str| text.get(name).map(|value| value.trim().to_ascii_lowercase());
    let alpha_only = match field("channels").as_deref() {
        None | Some("rgba") => false,
        Some("alpha") => true,
        Some(other) => return Err(Error::BadRequest(format!("channels `{other}` is not one of rgba, alpha"))),
    };
    let background = match text.get("bg_color").map(|value| value.trim()) {
        None | Some("") => None,
        Some(colour) => Some(hex_colour(colour)?),
    };
    let encoding = match field("format").as_deref() {
        None | Some("auto") if background.is_some() => Encoding::Jpeg,
        None | Some("auto") | Some("png") => Encoding::Png,
        Some("jpg") | Some("jpeg") => Encoding::Jpeg,
        Some(other) => return Err(Error::BadRequest(format!("format `{other}` is not one of auto, png, jpg"))),
    };
    let mut query = Vec::new();
    if alpha_only {
        query.push(("format", "mask".to_owned()));
    } else {
        // A JPEG has no transparency: remove.bg puts the subject on white.
        let background = background.or_else(|| (encoding == Encoding::Jpeg).then(|| "ffffff".to_owned()));
        if let Some(hex) = background {
            query.push(("bg_color", hex));
        }
        // The pod encodes the composite as JPEG itself: one encoding, none undone here.
        if encoding == Encoding::Jpeg {
            query.push(("format", "jpeg".to_owned()));
        }
    }
    if let Some(size) = field("size")
        && let Some(max_dimension) = max_dimension_for_size(&size)?
    {
        query.push(("max_dimension", max_dimension.to_string()));
    }
    Ok(Translated { path_and_query: native_path(&query), image, encoding })
}

/// remove.bg's output sizes by their megapixels, as the longest side of a 3:2 image:
/// `preview` (0.25 MP), `medium` (1.5 MP), `hd` (4 MP); `full`, `auto` and up are the
/// pod's own limit.
fn max_dimension_for_size(size: &str) -> Result<Option<u32>, Error> {
    match size {
        "preview" | "small" | "regular" => Ok(Some(625)),
        "medium" => Ok(Some(1500)),
        "hd" => Ok(Some(2500)),
        "full" | "4k" | "auto" | "50mp" => Ok(None),
        other => Err(Error::BadRequest(format!(
            "size `{other}` is not one of auto, preview, small, regular, medium, hd, full, 4k, 50MP"
        ))),
    }
}

/// `81d4fa` or `#81d4fa`, as the pod takes it.
fn hex_colour(colour: &str) -> Result<String, Error> {
    let hex = colour.trim_start_matches('#');
    if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex.to_ascii_lowercase())
    } else {
        Err(Error::BadRequest(format!("bg_color `{colour}` is not a hex colour like 81d4fa")))
    }
}

/// Base64, bare or as a `data:` URL.
fn decode_base64(encoded: &str) -> Result<Bytes, Error> {
    let payload = encoded.split_once(";base64,").map_or(encoded, |(_, payload)| payload).trim();
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map(Bytes::from)
        .map_err(|error| Error::BadRequest(format!("image_file_b64 is not base64: {error}")))
}

fn native_path(query: &[(&str, String)]) -> String {
    let pairs: Vec<String> = query.iter().map(|(name, value)| format!("{name}={value}")).collect();
    if pairs.is_empty() {
        matte_common::paths::REMOVE.to_owned()
    } else {
        format!("{}?{}", matte_common::paths::REMOVE, pairs.join("&"))
    }
}

/// The `Content-Type` the pod needs for raw image bytes, from their magic numbers; the
/// pod itself refuses anything else.
pub fn sniff_content_type(image: &[u8]) -> &'static str {
    match image {
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [0xFF, 0xD8, 0xFF, ..] => "image/jpeg",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        _ => "application/octet-stream",
    }
}

/// What translating a pod's `answer` for `encoding` takes beyond the answer itself: for
/// a PNG made JPEG, its decoded pixels (as its header declares them), their RGB copy
/// and the JPEG, at most three bytes a pixel each; nothing for an answer passed on as it
/// is. Read from the PNG's header alone, so that the room is held before a hostile or
/// broken pod's image, declaring millions of pixels in a few kilobytes, is decoded.
pub fn translation_room(status: axum::http::StatusCode, encoding: Encoding, answer: &[u8]) -> Result<usize, Error> {
    if !status.is_success() || !needs_reencoding(encoding, answer) {
        return Ok(0);
    }
    let decoder = image::ImageReader::with_format(Cursor::new(answer), image::ImageFormat::Png)
        .into_decoder()
        .map_err(|error| Error::Internal(format!("the pod's PNG could not be read: {error}")))?;
    let (width, height) = image::ImageDecoder::dimensions(&decoder);
    let decoded = image::ImageDecoder::total_bytes(&decoder);
    let rgb_and_jpeg = 2 * 3 * u64::from(width) * u64::from(height);
    Ok(usize::try_from(decoded.saturating_add(rgb_and_jpeg)).unwrap_or(usize::MAX))
}

/// Whether the answer is a PNG to be made JPEG: a composite comes from the pod as JPEG
/// already; a mask comes as PNG.
fn needs_reencoding(encoding: Encoding, answer: &[u8]) -> bool {
    encoding == Encoding::Jpeg && sniff_content_type(answer) != "image/jpeg"
}

/// The pods' answer as the dialect's client expects it, or the gateway's own error
/// where the image could not be made the dialect's (the caller answers it, and counts
/// it as the gateway's, not the pod's).
pub fn answer(
    dialect: Dialect,
    encoding: Encoding,
    parts: axum::http::response::Parts,
    bytes: Bytes,
) -> Result<Response, Error> {
    if !parts.status.is_success() {
        let (code, message) = native_error(&bytes);
        return Ok(in_dialect(dialect, parts, &code, &message));
    }
    image_answer(dialect, encoding, parts, bytes)
}

/// The gateway's own error in the dialect's shape.
pub fn error_answer(dialect: Dialect, error: Error) -> Response {
    let (code, message) = (error.code(), error.public_message());
    let (parts, _) = error.into_response().into_parts();
    in_dialect(dialect, parts, code, &message)
}

/// An error's status and headers (`Retry-After`) with the dialect's body.
fn in_dialect(dialect: Dialect, mut parts: axum::http::response::Parts, code: &str, message: &str) -> Response {
    let body = match dialect {
        Dialect::Rembg => serde_json::json!({ "detail": message }),
        Dialect::RemoveBg => serde_json::json!({ "errors": [{ "title": message, "code": code }] }),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body.to_string()))
}

fn image_answer(
    dialect: Dialect,
    encoding: Encoding,
    mut parts: axum::http::response::Parts,
    image: Bytes,
) -> Result<Response, Error> {
    let image = match encoding {
        Encoding::Png => image,
        Encoding::Jpeg => {
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
            if needs_reencoding(encoding, &image) { to_jpeg(&image)? } else { image }
        }
    };
    if dialect == Dialect::RemoveBg {
        // remove.bg clients read the result's size from these.
        let (width, height) = image::ImageReader::new(Cursor::new(&image[..]))
            .with_guessed_format()
            .map_err(|error| Error::Internal(format!("the result's format is unknown: {error}")))?
            .into_dimensions()
            .map_err(|error| Error::Internal(format!("the result's size is unknown: {error}")))?;
        parts.headers.insert("x-width", HeaderValue::from(width));
        parts.headers.insert("x-height", HeaderValue::from(height));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(image)))
}

/// The code and message of a `{"error": {"code", "message"}}` body.
fn native_error(body: &[u8]) -> (String, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|value| value["error"][name].as_str()).map(str::to_owned);
    (
        field("code").unwrap_or_else(|| "unknown".to_owned()),
        field("message").unwrap_or_else(|| "the request failed".to_owned()),
    )
}

/// JPEG quality for remove.bg's `jpg`: visually lossless for photographs.
const JPEG_QUALITY: u8 = 90;

fn to_jpeg(png: &[u8]) -> Result<Bytes, Error> {
    // Its room was held from its header (`translation_room`): the decoder may allocate
    // what the header declares and no more.
    let room = translation_room(axum::http::StatusCode::OK, Encoding::Jpeg, png)?;
    let mut reader = image::ImageReader::with_format(Cursor::new(png), image::ImageFormat::Png);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(u64::try_from(room).unwrap_or(u64::MAX));
    reader.limits(limits);
    let decoded =
        reader.decode().map_err(|error| Error::Internal(format!("the pod's PNG could not be decoded: {error}")))?;
    // JPEG has no alpha: the pod already composited onto the background, so the alpha
    // is opaque (or this is a grey mask).
    let flattened = match decoded {
        image::DynamicImage::ImageLuma8(mask) => image::DynamicImage::ImageLuma8(mask),
        other => image::DynamicImage::ImageRgb8(other.to_rgb8()),
    };
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
        .encode_image(&flattened)
        .map_err(|error| Error::Internal(format!("encoding the JPEG failed: {error}")))?;
    Ok(Bytes::from(jpeg))
}
