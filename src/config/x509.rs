//! The few facts read from an X.509 certificate that rustls does not expose: its validity
//! period, its subject and its DNS names. A DER walk over the fields of RFC 5280 §4.1, no
//! signature or chain checks (rustls does those during the handshake).
//!
//! Imports nothing internal.

use std::time::{Duration, SystemTime};

use der::asn1::{AnyRef, GeneralizedTime, ObjectIdentifier, UtcTime};
use der::{Decode, Reader, SliceReader, Tag, TagNumber, Tagged};

/// What was read from one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial number's bytes, big-endian as encoded.
    pub serial: Vec<u8>,
    /// Start of the validity period.
    pub not_before: SystemTime,
    /// End of the validity period.
    pub not_after: SystemTime,
    /// The subject as `CN=…, O=…` (RFC 4514 order: most specific first).
    pub subject: String,
    /// The subject's common names.
    pub common_names: Vec<String>,
    /// The `dNSName` entries of the subject alternative name extension.
    pub dns_names: Vec<String>,
}

/// A certificate that is not well-formed DER X.509.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a well-formed X.509 certificate ({0})")]
pub struct CertError(String);

impl From<der::Error> for CertError {
    fn from(e: der::Error) -> Self {
        Self(e.to_string())
    }
}

const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");

/// Short names of the usual subject attributes.
const ATTRIBUTE_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("0.9.2342.19200300.100.1.25", "DC"),
];

impl CertInfo {
    /// Reads a DER-encoded certificate.
    pub fn parse(der: &[u8]) -> Result<Self, CertError> {
        let certificate = AnyRef::from_der(der)?;
        expect(certificate, Tag::Sequence)?;
        let mut outer = SliceReader::new(certificate.value())?;
        let tbs: AnyRef<'_> = outer.decode()?;
        expect(tbs, Tag::Sequence)?;
        let mut fields = SliceReader::new(tbs.value())?;
        let mut first: AnyRef<'_> = fields.decode()?;
        if first.tag() == context(0, true) {
            // The version; the serial number follows.
            first = fields.decode()?;
        }
        expect(first, Tag::Integer)?;
        let serial = first.value().to_vec();
        let _signature: AnyRef<'_> = fields.decode()?;
        let _issuer: AnyRef<'_> = fields.decode()?;
        let validity: AnyRef<'_> = fields.decode()?;
        expect(validity, Tag::Sequence)?;
        let mut times = SliceReader::new(validity.value())?;
        let not_before = time(times.decode()?)?;
        let not_after = time(times.decode()?)?;
        let subject: AnyRef<'_> = fields.decode()?;
        expect(subject, Tag::Sequence)?;
        let (subject, common_names) = name(subject)?;
        let _public_key: AnyRef<'_> = fields.decode()?;
        let mut dns_names = Vec::new();
        while !fields.is_finished() {
            let field: AnyRef<'_> = fields.decode()?;
            if field.tag() == context(3, true) {
                dns_names = alt_names(field)?;
            }
        }
        Ok(Self {
            serial,
            not_before,
            not_after,
            subject,
            common_names,
            dns_names,
        })
    }

    /// Why the certificate cannot be used at `now`, if it cannot.
    pub fn invalid_at(&self, now: SystemTime) -> Option<String> {
        if now < self.not_before {
            return Some(format!(
                "the certificate is not valid yet (valid from {})",
                httpdate::fmt_http_date(self.not_before)
            ));
        }
        if now > self.not_after {
            return Some(format!(
                "the certificate expired on {}",
                httpdate::fmt_http_date(self.not_after)
            ));
        }
        None
    }

    /// The serial number in hex, as `openssl x509 -serial` shows it.
    pub fn serial_hex(&self) -> String {
        let bytes = match self.serial.as_slice() {
            [0, rest @ ..] if !rest.is_empty() => rest,
            all => all,
        };
        bytes.iter().map(|b| format!("{b:02X}")).collect()
    }
}

fn context(number: u8, constructed: bool) -> Tag {
    Tag::ContextSpecific {
        constructed,
        number: TagNumber::new(number),
    }
}

fn expect(any: AnyRef<'_>, tag: Tag) -> Result<(), CertError> {
    if any.tag() == tag {
        return Ok(());
    }
    Err(CertError(format!("expected {tag}, found {}", any.tag())))
}

fn time(any: AnyRef<'_>) -> Result<SystemTime, CertError> {
    let since_epoch: Duration = match any.tag() {
        Tag::UtcTime => any.decode_as::<UtcTime>()?.to_unix_duration(),
        Tag::GeneralizedTime => any.decode_as::<GeneralizedTime>()?.to_unix_duration(),
        other => return Err(CertError(format!("expected a time, found {other}"))),
    };
    Ok(SystemTime::UNIX_EPOCH + since_epoch)
}

/// A Name: `SEQUENCE OF SET OF { type, value }` → display text and common names.
fn name(sequence: AnyRef<'_>) -> Result<(String, Vec<String>), CertError> {
    let mut parts = Vec::new();
    let mut common_names = Vec::new();
    let mut rdns = SliceReader::new(sequence.value())?;
    while !rdns.is_finished() {
        let rdn: AnyRef<'_> = rdns.decode()?;
        let mut attributes = SliceReader::new(rdn.value())?;
        while !attributes.is_finished() {
            let attribute: AnyRef<'_> = attributes.decode()?;
            let mut pair = SliceReader::new(attribute.value())?;
            let oid: ObjectIdentifier = pair.decode()?;
            let value: AnyRef<'_> = pair.decode()?;
            let text = String::from_utf8_lossy(value.value()).into_owned();
            let dotted = oid.to_string();
            let key = ATTRIBUTE_NAMES
                .iter()
                .find(|(o, _)| *o == dotted)
                .map_or(dotted.as_str(), |(_, short)| short);
            parts.push(format!("{key}={text}"));
            if oid == COMMON_NAME {
                common_names.push(text);
            }
        }
    }
    parts.reverse();
    Ok((parts.join(", "), common_names))
}

/// The DNS names of the subject alternative name extension within `[3] Extensions`.
fn alt_names(explicit: AnyRef<'_>) -> Result<Vec<String>, CertError> {
    let mut names = Vec::new();
    let mut outer = SliceReader::new(explicit.value())?;
    let extensions: AnyRef<'_> = outer.decode()?;
    let mut extensions = SliceReader::new(extensions.value())?;
    while !extensions.is_finished() {
        let extension: AnyRef<'_> = extensions.decode()?;
        let mut fields = SliceReader::new(extension.value())?;
        let oid: ObjectIdentifier = fields.decode()?;
        let mut value: AnyRef<'_> = fields.decode()?;
        if value.tag() == Tag::Boolean {
            // `critical`
            value = fields.decode()?;
        }
        if oid != SUBJECT_ALT_NAME {
            continue;
        }
        expect(value, Tag::OctetString)?;
        let general_names = AnyRef::from_der(value.value())?;
        let mut entries = SliceReader::new(general_names.value())?;
        while !entries.is_finished() {
            let entry: AnyRef<'_> = entries.decode()?;
            if entry.tag() == context(2, false) {
                names.push(String::from_utf8_lossy(entry.value()).into_owned());
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_serial_validity_subject_and_dns_names() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["a.example".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "publisher");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Contoso");
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x0A, 0xBC]));
        params.not_before = rcgen::date_time_ymd(2020, 1, 2);
        params.not_after = rcgen::date_time_ymd(2030, 3, 4);
        let cert = params.self_signed(&key).expect("certificate");

        let info = CertInfo::parse(cert.der()).expect("parsed");
        assert_eq!(info.serial_hex(), "0ABC");
        assert_eq!(info.common_names, ["publisher"]);
        assert!(info.subject.contains("CN=publisher"), "{}", info.subject);
        assert!(info.subject.contains("O=Contoso"), "{}", info.subject);
        assert_eq!(info.dns_names, ["a.example"]);
        assert_eq!(
            httpdate::fmt_http_date(info.not_before),
            "Thu, 02 Jan 2020 00:00:00 GMT"
        );
        assert_eq!(
            httpdate::fmt_http_date(info.not_after),
            "Mon, 04 Mar 2030 00:00:00 GMT"
        );
        let inside = info.not_before + Duration::from_secs(86_400);
        assert_eq!(info.invalid_at(inside), None);
        let after = info.not_after + Duration::from_secs(1);
        assert!(info
            .invalid_at(after)
            .is_some_and(|why| why.contains("expired")));
        let before = info.not_before - Duration::from_secs(1);
        assert!(info
            .invalid_at(before)
            .is_some_and(|why| why.contains("not valid yet")));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\x30\x03\x02\x01", b"hello", b"\x30\x00"] {
            assert!(CertInfo::parse(bytes).is_err(), "{bytes:?}");
        }
    }
}
