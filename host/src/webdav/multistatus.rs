//! The `207 Multi-Status` body of a PROPFIND answer, parsed without
//! trusting it: no DTD, no entity expansion, bounded nesting, only `200`
//! propstats. Self-contained (quick-xml, percent-encoding, httpdate, and a
//! `RemoteStat` with the core's fields that the including module provides)
//! so the fuzz target in `tests/fuzz/` and the WASI transport
//! (`components/wasi-transport`) compile this very file without the rest of
//! the host.

use std::time::UNIX_EPOCH;

// The parent module names the stat type: the core's `RemoteStat` in the host
// and the fuzz target, a twin with the same fields in the WASI transport.
use super::RemoteStat;
use percent_encoding::percent_decode_str;

/// One `<response>` of a multistatus answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DavEntry {
    /// The href's path, percent-decoded (scheme and host removed).
    pub(crate) href_path: String,
    pub(crate) stat: RemoteStat,
}

/// Parses a `207 Multi-Status` body. Only the properties from a `200`
/// propstat count. No DTD is processed and no entity is expanded (quick-xml
/// does neither), so entity bombs are inert.
pub(crate) fn parse_multistatus(body: &[u8]) -> Result<Vec<DavEntry>, String> {
    use quick_xml::events::Event;

    #[derive(Default)]
    struct Partial {
        href: Option<String>,
        size: Option<u64>,
        etag: Option<String>,
        modified_ms: Option<i64>,
        is_collection: bool,
        // The current propstat's values, kept only if its status is 200.
        pending: PropValues,
    }
    #[derive(Default, Clone)]
    struct PropValues {
        size: Option<u64>,
        etag: Option<String>,
        modified_ms: Option<i64>,
        is_collection: bool,
        status_ok: bool,
    }

    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut stack: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut current: Option<Partial> = None;
    let mut saw_multistatus = false;
    // Text of the innermost element, which may arrive in pieces.
    let mut text = String::new();
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| format!("malformed XML: {e}"))?;
        match event {
            Event::Start(e) => {
                text.clear();
                let name = local_name(e.name().as_ref());
                match name.as_str() {
                    "multistatus" => saw_multistatus = true,
                    "response" => current = Some(Partial::default()),
                    "propstat" => {
                        if let Some(c) = current.as_mut() {
                            c.pending = PropValues::default();
                        }
                    }
                    "collection" if stack.last().is_some_and(|p| p == "resourcetype") => {
                        if let Some(c) = current.as_mut() {
                            c.pending.is_collection = true;
                        }
                    }
                    _ => {}
                }
                stack.push(name);
                if stack.len() > 64 {
                    return Err("XML nested too deeply".to_owned());
                }
            }
            Event::Empty(e) => {
                let name = local_name(e.name().as_ref());
                if name == "collection"
                    && stack.last().is_some_and(|p| p == "resourcetype")
                    && let Some(c) = current.as_mut()
                {
                    c.pending.is_collection = true;
                }
            }
            Event::Text(t) => {
                let piece = t.decode().map_err(|e| format!("bad text: {e}"))?;
                text.push_str(&quick_xml::escape::unescape(&piece).map_err(|e| format!("bad text: {e}"))?);
            }
            Event::GeneralRef(r) => {
                // A predefined entity inside text (`&amp;`); anything else is
                // refused rather than expanded.
                let name = r.decode().map_err(|e| format!("bad entity: {e}"))?;
                text.push_str(match name.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    other => return Err(format!("unknown entity &{other};")),
                });
            }
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t.into_inner())),
            Event::End(_) => {
                on_text(&stack, current.as_mut(), &text)?;
                text.clear();
                let name = stack.pop().unwrap_or_default();
                match name.as_str() {
                    "propstat" => {
                        if let Some(c) = current.as_mut()
                            && c.pending.status_ok
                        {
                            let p = c.pending.clone();
                            c.size = p.size.or(c.size);
                            c.etag = p.etag.or(c.etag.take());
                            c.modified_ms = p.modified_ms.or(c.modified_ms);
                            c.is_collection |= p.is_collection;
                        }
                    }
                    "response" => {
                        let c = current.take().ok_or("</response> without <response>")?;
                        let href = c.href.ok_or("a response without href")?;
                        out.push(DavEntry {
                            href_path: href_path(&href)?,
                            stat: RemoteStat {
                                size: if c.is_collection { 0 } else { c.size.unwrap_or(0) },
                                etag: c.etag,
                                modified_ms: c.modified_ms,
                                is_collection: c.is_collection,
                            },
                        });
                    }
                    _ => {}
                }
            }
            Event::DocType(_) => return Err("a DOCTYPE is not allowed in a WebDAV answer".to_owned()),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_multistatus {
        return Err("not a multistatus document".to_owned());
    }
    return Ok(out);

    fn on_text(stack: &[String], current: Option<&mut Partial>, text: &str) -> Result<(), String> {
        let Some(c) = current else { return Ok(()) };
        let Some(leaf) = stack.last() else { return Ok(()) };
        if text.trim().is_empty() {
            return Ok(());
        }
        match leaf.as_str() {
            "href" if stack.len() >= 2 && stack[stack.len() - 2] == "response" => {
                c.href.get_or_insert_with(String::new).push_str(text);
            }
            "status" if stack.len() >= 2 && stack[stack.len() - 2] == "propstat" => {
                c.pending.status_ok = text.split_whitespace().nth(1) == Some("200");
            }
            "getcontentlength" => {
                c.pending.size =
                    Some(text.trim().parse().map_err(|_| format!("bad getcontentlength {text:?}"))?);
            }
            "getetag" => c.pending.etag = Some(text.trim().to_owned()),
            "getlastmodified" => c.pending.modified_ms = http_date_ms(text),
            _ => {}
        }
        Ok(())
    }
}

fn local_name(qname: &[u8]) -> String {
    let name = qname.rsplit(|b| *b == b':').next().unwrap_or(qname);
    String::from_utf8_lossy(name).into_owned()
}

/// The decoded path of an href (absolute URL or absolute path).
fn href_path(href: &str) -> Result<String, String> {
    let href = href.trim();
    let path = match href.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => href,
    };
    let decoded =
        percent_decode_str(path).decode_utf8().map_err(|_| format!("href {href:?} is not UTF-8"))?;
    Ok(decoded.into_owned())
}

/// An RFC 1123 (HTTP) date as ms since the Unix epoch.
pub(crate) fn http_date_ms(text: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(text.trim()).ok()?;
    let ms = t.duration_since(UNIX_EPOCH).ok()?.as_millis();
    i64::try_from(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_parses_any_prefix_and_only_200_propstats() {
        let xml = br#"<?xml version="1.0"?>
<d:multistatus xmlns:d="DAV:" xmlns:lp1="DAV:">
 <d:response><d:href>/root/ab/</d:href>
  <d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype>
   <lp1:getlastmodified>Wed, 25 Nov 2026 10:00:00 GMT</lp1:getlastmodified></d:prop>
   <d:status>HTTP/1.1 200 OK</d:status></d:propstat>
  <d:propstat><d:prop><d:getcontentlength/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>
 </d:response>
 <d:response><d:href>http://h/root/ab/x%20y.pdf</d:href>
  <d:propstat><d:prop><d:resourcetype/><d:getcontentlength>12</d:getcontentlength>
   <d:getetag>W/"a&amp;b"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>
 </d:response>
</d:multistatus>"#;
        let entries = parse_multistatus(xml).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].href_path, "/root/ab/");
        assert!(entries[0].stat.is_collection);
        assert_eq!(entries[0].stat.modified_ms, Some(1_795_600_800_000));
        assert_eq!(entries[1].href_path, "/root/ab/x y.pdf");
        assert_eq!(entries[1].stat.size, 12);
        assert_eq!(entries[1].stat.etag.as_deref(), Some("W/\"a&b\""));
        assert!(!entries[1].stat.is_collection);
    }

    #[test]
    fn multistatus_refuses_garbage_doctype_and_entities() {
        assert!(parse_multistatus(b"not xml at all <<<").is_err());
        assert!(parse_multistatus(b"<html><body>hi</body></html>").is_err());
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>
<d:multistatus xmlns:d="DAV:"><d:response><d:href>&lol2;</d:href></d:response></d:multistatus>"#;
        let err = parse_multistatus(bomb).unwrap_err();
        assert!(err.contains("DOCTYPE"), "{err}");
        let unknown =
            br#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>&x;</d:href></d:response></d:multistatus>"#;
        assert!(parse_multistatus(unknown).is_err());
        let bad_len = br#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>/a</d:href><d:propstat><d:prop>
<d:getcontentlength>-1</d:getcontentlength></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#;
        assert!(parse_multistatus(bad_len).is_err());
    }
}
