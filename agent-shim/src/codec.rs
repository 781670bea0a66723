//! The shim's small binary codec: little-endian integers, length-prefixed byte strings,
//! and a bounds-checked reader that never panics on bad bytes.
//!
//! Every length read from media is checked against the bytes that remain *before* anything
//! is allocated, so a corrupt length can neither overrun the buffer nor make the decoder
//! allocate gigabytes.

use crate::address::{self, Address, AddressError, NamePart};

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("truncated at byte {at}: need {needed} more bytes, {available} left")]
    Truncated {
        at: usize,
        needed: usize,
        available: usize,
    },
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("invalid UTF-8 in {what} at byte {at}")]
    BadUtf8 { what: &'static str, at: usize },
    #[error("unknown {what} tag {tag}")]
    BadTag { what: &'static str, tag: u8 },
    #[error("invalid name in stored data: {0}")]
    BadName(#[from] AddressError),
    #[error("unsupported format version {version} (this build reads {supported})")]
    BadVersion { version: u8, supported: u8 },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum { stored: u32, computed: u32 },
    #[error("{count} unexpected trailing bytes")]
    TrailingBytes { count: usize },
    #[error("inconsistent {what}: {detail}")]
    Inconsistent { what: &'static str, detail: String },
}

/// Appends little-endian fields to a buffer.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    pub fn bool(&mut self, value: bool) {
        self.buf.push(u8::from(value));
    }

    pub fn u16(&mut self, value: u16) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u32(&mut self, value: u32) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    pub fn u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    /// A collection length (`u32`); lengths come from bounded in-memory values.
    pub fn len(&mut self, len: usize) {
        debug_assert!(u32::try_from(len).is_ok(), "collection of {len} elements");
        self.u32(u32::try_from(len).unwrap_or(u32::MAX));
    }

    pub fn bytes(&mut self, value: &[u8]) {
        self.len(value.len());
        self.buf.extend_from_slice(value);
    }

    pub fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    pub fn opt_str(&mut self, value: Option<&str>) {
        match value {
            Some(value) => {
                self.u8(1);
                self.str(value);
            }
            None => self.u8(0),
        }
    }

    pub fn opt_u64(&mut self, value: Option<u64>) {
        match value {
            Some(value) => {
                self.u8(1);
                self.u64(value);
            }
            None => self.u8(0),
        }
    }

    pub fn address(&mut self, address: &Address) {
        self.opt_str(address.client());
        self.str(address.user());
        self.str(address.agent());
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }
}

/// Reads fields back; every read is bounds-checked.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, position: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated {
                at: self.position,
                needed: len,
                available: self.remaining(),
            });
        }
        let slice = &self.bytes[self.position..self.position + len];
        self.position += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::BadTag { what: "bool", tag }),
        }
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A collection length, at most `max`, and plausible: each element takes at least
    /// `min_element_bytes`, so the count cannot exceed what the remaining bytes could hold.
    pub fn len(
        &mut self,
        what: &'static str,
        max: usize,
        min_element_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        let plausible = self.remaining() / min_element_bytes.max(1);
        if len > max {
            return Err(DecodeError::TooLong {
                what,
                len: len as u64,
                max: max as u64,
            });
        }
        if len > plausible {
            return Err(DecodeError::Truncated {
                at: self.position,
                needed: len,
                available: plausible,
            });
        }
        Ok(len)
    }

    pub fn bytes(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.len(what, max, 1)?;
        self.take(len)
    }

    pub fn string(&mut self, what: &'static str, max: usize) -> Result<String, DecodeError> {
        let at = self.position;
        let bytes = self.bytes(what, max)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::BadUtf8 { what, at })
    }

    pub fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }

    /// A name of the given kind, checked against the charset.
    pub fn name(&mut self, part: NamePart) -> Result<String, DecodeError> {
        let name = self.string("name", part.max_bytes())?;
        if part == NamePart::Agent {
            address::check_agent_name(&name)?;
        } else {
            address::check_name(part, &name)?;
        }
        Ok(name)
    }

    pub fn opt_name(&mut self, part: NamePart) -> Result<Option<String>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.name(part)?)
        } else {
            None
        })
    }

    pub fn address(&mut self) -> Result<Address, DecodeError> {
        let client = self.opt_name(NamePart::Client)?;
        let user = self.name(NamePart::User)?;
        let agent = self.name(NamePart::Agent)?;
        Ok(Address::new(client.as_deref(), &user, &agent)?)
    }

    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_truncation() {
        let mut writer = Writer::new();
        writer.u8(7);
        writer.u32(0xdead_beef);
        writer.u64(u64::MAX - 1);
        writer.str("bob");
        writer.opt_u64(Some(5));
        writer.address(&Address::parse("desn:bob@a").expect("valid"));
        let bytes = writer.into_bytes();
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u8(), Ok(7));
        assert_eq!(reader.u32(), Ok(0xdead_beef));
        assert_eq!(reader.u64(), Ok(u64::MAX - 1));
        assert_eq!(reader.string("s", 8).as_deref(), Ok("bob"));
        assert_eq!(reader.opt_u64(), Ok(Some(5)));
        assert_eq!(
            reader.address().map(|a| a.to_string()).as_deref(),
            Ok("desn:bob@a")
        );
        assert_eq!(reader.finish(), Ok(()));
        for cut in 0..bytes.len() {
            let mut reader = Reader::new(&bytes[..cut]);
            let result = (|| -> Result<(), DecodeError> {
                reader.u8()?;
                reader.u32()?;
                reader.u64()?;
                reader.string("s", 8)?;
                reader.opt_u64()?;
                reader.address()?;
                Ok(())
            })();
            assert!(result.is_err(), "cut at {cut} decoded");
        }
    }

    #[test]
    fn huge_length_is_refused_before_allocating() {
        let bytes = [0xff, 0xff, 0xff, 0x7f, 1, 2];
        let mut reader = Reader::new(&bytes);
        assert!(reader.bytes("blob", usize::MAX).is_err());
    }
}
