//! `Range` headers on blob GETs: one byte range is honoured (206); a malformed header is ignored, as RFC 9110
//! allows; several ranges are answered with the whole blob; a range beyond the blob is 416.

use std::ops::RangeInclusive;

use crate::error::RegistryError;

/// Resolves a `Range` header against a blob of `size` bytes. `Ok(None)`: serve the whole blob.
pub fn resolve(
    header: Option<&str>,
    size: u64,
) -> Result<Option<RangeInclusive<u64>>, RegistryError> {
    let Some(header) = header else {
        return Ok(None);
    };
    let Ok(parsed) = http_range_header::parse_range_header(header) else {
        return Ok(None);
    };
    // No byte range of an empty blob exists.
    let validated = if size == 0 {
        Err(())
    } else {
        parsed.validate(size).map_err(drop)
    };
    match validated {
        Ok(ranges) if ranges.len() == 1 => Ok(ranges.into_iter().next()),
        Ok(_) => Ok(None),
        Err(_) => Err(RegistryError::RangeInvalid(format!(
            "range {header:?} is not satisfiable for a blob of {size} bytes"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(resolve(None, 10).unwrap(), None);
        assert_eq!(resolve(Some("bytes=0-3"), 10).unwrap(), Some(0..=3));
        assert_eq!(resolve(Some("bytes=7-"), 10).unwrap(), Some(7..=9));
        assert_eq!(resolve(Some("bytes=-2"), 10).unwrap(), Some(8..=9));
        assert_eq!(resolve(Some("bytes=5-100"), 10).unwrap(), Some(5..=9));
        assert_eq!(resolve(Some("items=0-1"), 10).unwrap(), None);
        assert_eq!(resolve(Some("bytes=0-1,4-5"), 10).unwrap(), None);
        assert!(resolve(Some("bytes=10-"), 10).is_err());
        assert!(resolve(Some("bytes=0-0"), 0).is_err());
    }
}
