//! Checksums written by hand for the checkpoint and corpus formats (no dependency).
//!
//! * CRC-32 (IEEE 802.3, as in zlib/PNG): reflected polynomial `0xEDB88320`, initial value
//!   `0xFFFFFFFF`, final complement; table-driven (a 256-entry table built at compile time).
//!   Check value: `crc32(b"123456789") == 0xCBF43926`.
//! * FNV-1a, 64 bit (Fowler, Noll, Vo): offset basis `0xcbf29ce484222325`, prime `0x100000001b3`,
//!   `h = (h ^ byte) * prime` per byte.

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE) of `bytes`.
///
/// ```
/// assert_eq!(sd_attention::train::checksum::crc32(b"123456789"), 0xCBF4_3926);
/// ```
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// FNV-1a 64-bit hash of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}
