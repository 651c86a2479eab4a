//! A small, fully checked scanner for the subset of JSON a safetensors header uses: objects,
//! strings, non-negative integers and arrays of them. It never allocates and never panics;
//! every failure reports the byte offset where the header stops making sense.

use crate::error::Error;

pub(crate) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Scanner<'a> {
    pub fn new(text: &'a str) -> Self {
        Scanner { text, pos: 0 }
    }

    fn err(&self) -> Error {
        Error::HeaderSyntax { offset: self.pos }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    pub fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    pub fn expect(&mut self, byte: u8) -> Result<(), Error> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err())
        }
    }

    /// Consumes `byte` if it comes next (after white space).
    pub fn eat(&mut self, byte: u8) -> bool {
        self.skip_ws();
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    /// A string, returned raw (escape sequences are checked but not decoded).
    pub fn string(&mut self) -> Result<&'a str, Error> {
        self.expect(b'"')?;
        let start = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.err()),
                Some(b'"') => break,
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1
                        }
                        Some(b'u') => {
                            self.pos += 1;
                            for _ in 0..4 {
                                if !self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                                    return Err(self.err());
                                }
                                self.pos += 1;
                            }
                        }
                        _ => return Err(self.err()),
                    }
                }
                Some(c) if c < 0x20 => return Err(self.err()),
                Some(_) => self.pos += 1,
            }
        }
        let raw = self.text.get(start..self.pos).ok_or(self.err())?;
        self.pos += 1;
        Ok(raw)
    }

    /// A non-negative integer without sign, fraction or exponent.
    pub fn uint(&mut self) -> Result<u64, Error> {
        self.skip_ws();
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(c - b'0')))
                .ok_or(self.err())?;
            self.pos += 1;
        }
        let digits = self.pos - start;
        let leading_zero = digits > 1 && self.text.as_bytes().get(start) == Some(&b'0');
        if digits == 0 || leading_zero {
            self.pos = start;
            return Err(self.err());
        }
        Ok(value)
    }

    /// An array of non-negative integers, written into `out`; returns how many.
    pub fn uint_array(&mut self, out: &mut [u64]) -> Result<usize, Error> {
        self.expect(b'[')?;
        if self.eat(b']') {
            return Ok(0);
        }
        let mut n = 0;
        loop {
            let value = self.uint()?;
            *out.get_mut(n).ok_or(self.err())? = value;
            n += 1;
            if self.eat(b']') {
                return Ok(n);
            }
            self.expect(b',')?;
        }
    }

    /// Walks an object, calling `on_entry` with each key; `on_entry` must consume the value.
    pub fn object(
        &mut self,
        mut on_entry: impl FnMut(&mut Self, &'a str) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.expect(b'{')?;
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.expect(b':')?;
            on_entry(self, key)?;
            if self.eat(b'}') {
                return Ok(());
            }
            self.expect(b',')?;
        }
    }

    /// Fails unless only white space remains.
    pub fn end(&mut self) -> Result<(), Error> {
        self.skip_ws();
        if self.pos == self.text.len() {
            Ok(())
        } else {
            Err(self.err())
        }
    }

    pub fn offset(&self) -> usize {
        self.pos
    }
}
