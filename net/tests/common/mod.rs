//! Test helpers: a seeded RNG and the generated random-value builders.
#![allow(dead_code)]

/// xorshift64* — small, seeded, reproducible (print the seed on failure).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    fn edge(&mut self) -> Option<i64> {
        match self.below(8) {
            0 => Some(0),
            1 => Some(-1),
            _ => None,
        }
    }
    pub fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    pub fn i8(&mut self) -> i8 {
        self.edge().map_or(self.next() as i8, |e| e as i8)
    }
    pub fn i16(&mut self) -> i16 {
        self.edge().map_or(self.next() as i16, |e| e as i16)
    }
    pub fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    pub fn i32(&mut self) -> i32 {
        self.edge().map_or(self.next() as i32, |e| e as i32)
    }
    pub fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    pub fn i64(&mut self) -> i64 {
        self.edge().unwrap_or(self.next() as i64)
    }
    pub fn f64(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 7.0
    }
    pub fn uuid(&mut self) -> [u8; 16] {
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&self.next().to_le_bytes());
        u[8..].copy_from_slice(&self.next().to_le_bytes());
        u
    }
    pub fn string(&mut self) -> String {
        const ALPHABET: &[char] = &['a', 'b', 'z', '-', '.', '_', '0', '9', 'é', '→', '🦀'];
        let n = self.below(12) as usize;
        (0..n)
            .map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize])
            .collect()
    }
    pub fn bytes(&mut self) -> bytes::Bytes {
        let n = self.below(40) as usize;
        (0..n)
            .map(|_| self.next() as u8)
            .collect::<Vec<u8>>()
            .into()
    }
    /// Array length: shorter the deeper we are.
    pub fn len(&mut self, depth: u32) -> usize {
        match depth {
            0 => self.below(5) as usize,
            1 => self.below(4) as usize,
            2 | 3 => self.below(3) as usize,
            _ => 0,
        }
    }
}

pub mod random {
    pub use super::Rng;
    include!(concat!(env!("OUT_DIR"), "/random.rs"));
}
