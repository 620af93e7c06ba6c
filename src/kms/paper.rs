//! The root key as text to print and keep on paper (`ssefs root-key
//! export` and `import`; docs/FORMAT.md §7.2): four lines of 16 hex digits,
//! each with a CRC-16 of its own that catches any single mistyped digit
//! and any swap of two neighbouring digits in it, and a sum over the whole
//! key that catches swapped lines.

use ring::digest;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::crypto::SecretKey;
use crate::error::{Error, OssCode, Result};

const HEADER: &str = "ssefs root key, paper backup format 1";
const LINES: usize = 4;
const BYTES_PER_LINE: usize = 8;
const KEY_LEN: usize = LINES * BYTES_PER_LINE;

/// CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xffff): detects every
/// error confined to 16 consecutive bits, so every change of one ASCII
/// digit and every swap of two neighbouring ones.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xffff;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The check of line `n` (1-based) whose digits are `hex` (lowercase):
/// the line number is covered, so a line typed in the wrong place fails.
fn line_check(n: usize, hex: &str) -> u16 {
    crc16(format!("{n}:{hex}").as_bytes())
}

/// The sum over the whole key: 32 bits of SHA-256 under a label.
fn key_sum(key: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"ssefs paper key sum v1");
    ctx.update(key);
    let d = ctx.finish();
    d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The paper text for `key` (32 bytes) of data directory `id`.
pub fn encode(key: &SecretKey, id: Option<Uuid>) -> Result<Zeroizing<String>> {
    let k = key.expose();
    if k.len() != KEY_LEN {
        return Err(Error::new(
            OssCode::InternalError,
            format!("a root key is {KEY_LEN} bytes"),
        ));
    }
    let mut out = Zeroizing::new(String::new());
    out.push_str(HEADER);
    out.push('\n');
    if let Some(id) = id {
        out.push_str(&format!("data directory {}\n", id.hyphenated()));
    }
    for (i, chunk) in k.chunks(BYTES_PER_LINE).enumerate() {
        let n = i + 1;
        let hex = Zeroizing::new(chunk.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let groups: Vec<&str> = (0..hex.len()).step_by(4).map(|j| &hex[j..j + 4]).collect();
        out.push_str(&format!(
            "{n}: {}  check {:04x}\n",
            groups.join(" "),
            line_check(n, &hex)
        ));
    }
    out.push_str(&format!("sum: {}\n", key_sum(k)));
    Ok(out)
}

/// The key in paper text, and the data directory id it names (if any).
/// Any mistake is refused, naming the line to look at.
pub fn decode(text: &str) -> Result<(SecretKey, Option<Uuid>)> {
    let bad = |msg: String| Error::new(OssCode::InvalidArgument, format!("paper key: {msg}"));
    let mut lines: [Option<Zeroizing<String>>; LINES] = Default::default();
    let mut sum = None;
    let mut id = None;
    for raw in text.lines() {
        let line = raw.trim();
        let lower = line.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("data directory ") {
            // Informational: the keystore check decides, so a typo here
            // must not block a restore.
            id = Uuid::parse_str(rest.trim()).ok();
            continue;
        }
        if let Some(rest) = lower.strip_prefix("sum:") {
            sum = Some(rest.split_whitespace().collect::<String>());
            continue;
        }
        let Some((num, rest)) = lower.split_once(':') else {
            continue;
        };
        let Ok(n) = num.trim().parse::<usize>() else {
            continue;
        };
        if !(1..=LINES).contains(&n) {
            return Err(bad(format!("there is no line {n}: lines are 1 to {LINES}")));
        }
        let Some((digits, check)) = rest.split_once("check") else {
            return Err(bad(format!("line {n} has no check")));
        };
        let hex = Zeroizing::new(digits.split_whitespace().collect::<String>());
        let check = check.split_whitespace().collect::<String>();
        if hex.len() != 2 * BYTES_PER_LINE || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "line {n} must hold {} hex digits (0-9, a-f); look for a missing, extra or \
                 mistyped one",
                2 * BYTES_PER_LINE
            )));
        }
        let want = u16::from_str_radix(&check, 16)
            .ok()
            .filter(|_| check.len() == 4)
            .ok_or_else(|| bad(format!("the check of line {n} must be 4 hex digits")))?;
        if line_check(n, &hex) != want {
            return Err(bad(format!(
                "line {n} does not match its check: look for a typo in that line"
            )));
        }
        if lines[n - 1].replace(hex).is_some() {
            return Err(bad(format!("line {n} appears twice")));
        }
    }
    let mut key = Zeroizing::new(Vec::with_capacity(KEY_LEN));
    for (i, l) in lines.iter().enumerate() {
        let l = l
            .as_ref()
            .ok_or_else(|| bad(format!("line {} is missing", i + 1)))?;
        for j in (0..l.len()).step_by(2) {
            // Checked above: all hex digits.
            key.push(u8::from_str_radix(&l[j..j + 2], 16).map_err(|_| bad("not hex".into()))?);
        }
    }
    let sum = sum.ok_or_else(|| bad("the sum line is missing".into()))?;
    if sum != key_sum(&key) {
        return Err(bad(
            "the lines do not add up to the sum: look for lines typed in the wrong order or a \
             typo in the sum"
                .into(),
        ));
    }
    Ok((SecretKey::from_bytes(&key), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (SecretKey, Uuid, String) {
        let key = SecretKey::from_bytes(
            &(0u8..32)
                .map(|i| i.wrapping_mul(37) ^ 0x5a)
                .collect::<Vec<_>>(),
        );
        let id = Uuid::new_v4();
        let text = encode(&key, Some(id)).unwrap().to_string();
        (key, id, text)
    }

    #[test]
    fn round_trip() {
        let (key, id, text) = sample();
        let (back, bid) = decode(&text).unwrap();
        assert_eq!(back, key);
        assert_eq!(bid, Some(id));
        // Case and spacing do not matter.
        let (back, _) = decode(&text.to_uppercase().replace("  ", "   ")).unwrap();
        assert_eq!(back, key);
    }

    /// The key lines' digit positions in `text` (line, byte offset).
    fn digit_positions(text: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut off = 0;
        for line in text.split_inclusive('\n') {
            if line.as_bytes()[0].is_ascii_digit() {
                let start = line.find(':').unwrap() + 1;
                let end = line.find("check").unwrap();
                for (i, b) in line.bytes().enumerate() {
                    if (start..end).contains(&i) && b.is_ascii_hexdigit() {
                        out.push(off + i);
                    }
                }
            }
            off += line.len();
        }
        out
    }

    #[test]
    fn every_single_digit_typo_is_refused() {
        let (_, _, text) = sample();
        let pos = digit_positions(&text);
        assert_eq!(pos.len(), 64);
        for &p in &pos {
            for d in b"0123456789abcdef" {
                let mut t = text.clone().into_bytes();
                if t[p] == *d {
                    continue;
                }
                t[p] = *d;
                let t = String::from_utf8(t).unwrap();
                let e = decode(&t).unwrap_err().to_string();
                assert!(e.contains("does not match its check"), "{e}");
            }
        }
    }

    #[test]
    fn every_swap_of_neighbouring_digits_is_refused() {
        let (_, _, text) = sample();
        let pos = digit_positions(&text);
        for w in pos.windows(2) {
            let mut t = text.clone().into_bytes();
            if t[w[0]] == t[w[1]] {
                continue;
            }
            t.swap(w[0], w[1]);
            assert!(decode(&String::from_utf8(t).unwrap()).is_err());
        }
    }

    #[test]
    fn typos_in_checks_and_swapped_or_missing_lines_are_refused() {
        let (_, _, text) = sample();
        let lines: Vec<&str> = text.lines().collect();
        // A mistyped check digit.
        let l = lines[2];
        let last = l.chars().last().unwrap();
        let typo = format!(
            "{}{}",
            &l[..l.len() - 1],
            if last == '0' { '1' } else { '0' }
        );
        let t = text.replace(l, &typo);
        assert!(decode(&t).unwrap_err().to_string().contains("line 1"));
        // Two lines swapped, numbers and all: the sum catches it.
        let swapped = text
            .replace(lines[2], "@@")
            .replace(lines[3], lines[2])
            .replace("@@", lines[3]);
        assert!(
            decode(&swapped).is_ok(),
            "numbered lines may come in any order"
        );
        // Two lines' contents swapped (numbers kept): the checks catch it.
        let (a, b) = (
            lines[2].split_once(':').unwrap(),
            lines[3].split_once(':').unwrap(),
        );
        let t = text
            .replace(lines[2], &format!("{}:{}", a.0, b.1))
            .replace(lines[3], &format!("{}:{}", b.0, a.1));
        assert!(decode(&t).is_err());
        // A missing line.
        assert!(decode(&text.replace(lines[4], ""))
            .unwrap_err()
            .to_string()
            .contains("line 3 is missing"));
        // A mistyped sum.
        let sum = lines.iter().find(|l| l.starts_with("sum:")).unwrap();
        let t = text.replace(sum, "sum: 00000000");
        assert!(decode(&t).unwrap_err().to_string().contains("sum"));
    }
}
