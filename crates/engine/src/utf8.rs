//! Turning token bytes into text without splitting a character.

/// Buffers token pieces until they form whole UTF-8 characters.
///
/// A multi-byte character is often split across tokens; emitting each piece
/// lossily would put U+FFFD into the output.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Add bytes; return the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid_up_to = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An error with no length is an incomplete sequence at the end: wait for more.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Invalid bytes will never become valid: replace them now.
            Err(_) => return String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into(),
        };
        let rest = self.pending.split_off(valid_up_to);
        let text = std::mem::replace(&mut self.pending, rest);
        String::from_utf8(text).unwrap_or_default()
    }

    /// Whatever is left at the end, lossily.
    pub fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_pieces_comes_out_whole() {
        let mut decoder = Utf8Decoder::default();
        let euro = "€".as_bytes();
        assert_eq!(decoder.push(b"a"), "a");
        assert_eq!(decoder.push(&euro[..1]), "");
        assert_eq!(decoder.push(&euro[1..2]), "");
        assert_eq!(decoder.push(&euro[2..]), "€");
        assert_eq!(decoder.finish(), "");
    }

    #[test]
    fn invalid_bytes_are_replaced_not_held() {
        let mut decoder = Utf8Decoder::default();
        assert_eq!(decoder.push(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(decoder.push(&[0xe2, 0x82]), "");
        assert_eq!(decoder.finish(), "\u{fffd}");
    }
}
