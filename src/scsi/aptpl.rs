//! The saved persistent reservation state of a logical unit (APTPL, SPC-4
//! 5.13.5): one text file per LUN in the state directory, named after the
//! LUN's NAA designator, replaced atomically.
//!
//! Format (one record a line, every field required, nothing else allowed):
//!
//! ```text
//! srptd-pr 2
//! lun <NAA designator, 32 hex digits>
//! generation <PRGENERATION, decimal>
//! registration <initiator port id, 32 hex> <target port> <key, 16 hex>
//! reservation <holder initiator port id, 32 hex> <target port> <TYPE, 1 hex digit>
//! checksum <64-bit FNV-1a of every byte above, 16 hex>
//! ```
//!
//! `<target port>` is a relative target port identifier (decimal, 1-65535)
//! or `all` for a registration made with ALL_TG_PT = 1. `registration`
//! repeats (at most [`MAX_REGISTRATIONS`]); `reservation` appears at most
//! once and its holder is registered. A file is only written while APTPL
//! is in effect, so loading one means APTPL = 1.
//!
//! Version 1 files (`srptd-pr 1`, registrations per initiator port:
//! `registration <id> <key> <ALL_TG_PT 0|1>`, `reservation <id> <TYPE>`)
//! are still read; their registrations held through every target port,
//! so they load as ALL_TG_PT ones.
//!
//! Saving writes `<name>.tmp`, fsyncs it, renames it over the file and
//! fsyncs the directory: after a crash the file is the old state or the
//! new one, never a mix; a PERSISTENT RESERVE OUT reports GOOD only after
//! all four steps succeeded.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::lun::fnv1a;
use super::reservations::{
    RegistrantId, Registration, Reservation, ReservationType, Reservations, MAX_REGISTRATIONS,
};
use crate::wire::{hex, parse_hex};

const MAGIC: &str = "srptd-pr 2";
const MAGIC_V1: &str = "srptd-pr 1";
const SEED: u64 = 0xcbf2_9ce4_8422_2325;

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: line {line}: {reason} (remove or repair the file to start without these reservations)")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
}

/// The file text for `r` of the LUN with designator `naa`.
pub fn encode(naa: &[u8; 16], r: &Reservations) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{MAGIC}");
    let _ = writeln!(s, "lun {}", hex(naa));
    let _ = writeln!(s, "generation {}", r.generation);
    for (g, reg) in &r.registrations {
        let _ = writeln!(
            s,
            "registration {} {} {:016x}",
            hex(&g.initiator),
            port_field(g),
            reg.key
        );
    }
    if let Some(res) = r.reservation {
        let _ = writeln!(
            s,
            "reservation {} {} {:x}",
            hex(&res.holder.initiator),
            port_field(&res.holder),
            res.rtype.0
        );
    }
    let sum = fnv1a(SEED, s.as_bytes());
    let _ = writeln!(s, "checksum {sum:016x}");
    s
}

/// The `<target port>` field of `g`.
fn port_field(g: &RegistrantId) -> String {
    g.port.map_or_else(|| "all".to_owned(), |p| p.to_string())
}

/// Parses a `<target port>` field.
fn parse_port(f: &str) -> Option<Option<u16>> {
    if f == "all" {
        return Some(None);
    }
    let valid = !f.is_empty() && f.len() <= 5 && f.bytes().all(|b| b.is_ascii_digit()) && !f.starts_with('0');
    valid.then(|| f.parse().ok().map(Some)).flatten()
}

/// Parses file text written by [`encode`] for the LUN `naa`. Errors are
/// `(line number, reason)`.
pub fn decode(naa: &[u8; 16], text: &str) -> Result<Reservations, (usize, &'static str)> {
    let body_end = text.rfind("checksum ").ok_or((0, "no checksum line"))?;
    let (body, tail) = text.split_at(body_end);
    let last = body.lines().count() + 1;
    let sum = tail
        .strip_suffix('\n')
        .and_then(|t| t.strip_prefix("checksum "))
        .and_then(|h| u64::from_str_radix(h, 16).ok().filter(|_| h.len() == 16))
        .ok_or((last, "malformed checksum line"))?;
    if !body.ends_with('\n') || sum != fnv1a(SEED, body.as_bytes()) {
        return Err((last, "checksum mismatch"));
    }
    let mut r = Reservations {
        aptpl: true,
        ..Reservations::default()
    };
    let mut lines = body.lines().enumerate().map(|(i, l)| (i + 1, l));
    let mut next = |what: &'static str| lines.next().ok_or((last, what));
    let (n, l) = next("empty file")?;
    let v1 = l == MAGIC_V1;
    if l != MAGIC && !v1 {
        return Err((n, "not an srptd reservation state file (version 1 or 2)"));
    }
    let (n, l) = next("no lun line")?;
    if l.strip_prefix("lun ").and_then(parse_hex::<16>) != Some(*naa) {
        return Err((n, "the file belongs to another LUN"));
    }
    let (n, l) = next("no generation line")?;
    r.generation = l
        .strip_prefix("generation ")
        .filter(|g| g.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|g| g.parse().ok())
        .ok_or((n, "malformed generation line"))?;
    for (n, l) in lines {
        let f: Vec<&str> = l.split(' ').collect();
        // Version 1 lines, in version 2's field order (ALL_TG_PT is
        // checked and dropped: every version 1 registration held through
        // every target port).
        let f: Vec<&str> = match (v1, f.as_slice()) {
            (true, ["registration", id, key, atp]) => {
                if !matches!(*atp, "0" | "1") {
                    return Err((n, "malformed ALL_TG_PT"));
                }
                vec!["registration", id, "all", key]
            }
            (true, ["reservation", id, t]) => vec!["reservation", id, "all", t],
            (true, _) => return Err((n, "unexpected line")),
            (false, _) => f,
        };
        match f.as_slice() {
            ["registration", id, port, key] if r.reservation.is_none() => {
                let initiator = parse_hex::<16>(id).ok_or((n, "malformed initiator port id"))?;
                let port = parse_port(port).ok_or((n, "malformed target port"))?;
                let key = (key.len() == 16)
                    .then(|| u64::from_str_radix(key, 16).ok())
                    .flatten()
                    .filter(|&k| k != 0)
                    .ok_or((n, "malformed reservation key"))?;
                if r.registrations.len() >= MAX_REGISTRATIONS {
                    return Err((n, "too many registrations"));
                }
                let g = RegistrantId { initiator, port };
                // One initiator port is registered through each target port
                // at most once, and not also through all of them.
                if r.registrations.keys().any(|h| h.overlaps(&g)) {
                    return Err((n, "duplicate registration"));
                }
                r.registrations.insert(g, Registration { key });
            }
            ["reservation", id, port, t] if r.reservation.is_none() => {
                let initiator = parse_hex::<16>(id).ok_or((n, "malformed initiator port id"))?;
                let port = parse_port(port).ok_or((n, "malformed target port"))?;
                let holder = RegistrantId { initiator, port };
                let rtype = (t.len() == 1)
                    .then(|| u8::from_str_radix(t, 16).ok())
                    .flatten()
                    .map(ReservationType)
                    .filter(|t| t.is_valid())
                    .ok_or((n, "malformed reservation type"))?;
                // SPC-4 5.13.11: every registrant holds an all registrants
                // reservation (the holder saved is whoever reserved, who
                // may have unregistered since); other types are held by one
                // registered I_T nexus.
                if rtype.all_registrants() {
                    if r.registrations.is_empty() {
                        return Err((n, "an all registrants reservation without registrants"));
                    }
                } else if !r.registrations.contains_key(&holder) {
                    return Err((n, "the reservation holder is not registered"));
                }
                r.reservation = Some(Reservation { holder, rtype });
            }
            _ => return Err((n, "unexpected line")),
        }
    }
    Ok(r)
}

/// The state file of one LUN.
#[derive(Clone, Debug)]
pub struct AptplFile {
    dir: PathBuf,
    naa: [u8; 16],
}

impl AptplFile {
    /// The file of the LUN with designator `naa` in `dir`.
    pub fn new(dir: &Path, naa: [u8; 16]) -> AptplFile {
        AptplFile {
            dir: dir.to_path_buf(),
            naa,
        }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("pr-{}.state", hex(&self.naa)))
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir.join(format!("pr-{}.state.tmp", hex(&self.naa)))
    }

    /// The saved state, `None` when there is none (no directory or no
    /// file). A leftover `.tmp` file is an interrupted save and is ignored.
    pub fn load(&self) -> Result<Option<Reservations>, LoadError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LoadError::Io { path, source }),
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| LoadError::Corrupt {
            path: path.clone(),
            line: 0,
            reason: "not UTF-8 text",
        })?;
        decode(&self.naa, text)
            .map(Some)
            .map_err(|(line, reason)| LoadError::Corrupt { path, line, reason })
    }

    /// Saves `r`: temporary file, fsync, rename, fsync of the directory.
    pub fn save(&self, r: &Reservations) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let tmp = self.tmp_path();
        let mut f = fs::File::create(&tmp)?;
        f.write_all(encode(&self.naa, r).as_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, self.path())?;
        sync_dir(&self.dir)
    }

    /// Removes the saved state (APTPL turned off), durably.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(self.path()) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// fsync of a directory, so a rename or unlink in it is durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAA: [u8; 16] = [0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    fn sample() -> Reservations {
        let mut r = Reservations {
            generation: 7,
            aptpl: true,
            ..Reservations::default()
        };
        r.registrations.insert(through(1, 2), Registration { key: 0xabc });
        r.registrations.insert(through(1, 3), Registration { key: 0xabd });
        r.registrations
            .insert(RegistrantId::all_ports([2; 16]), Registration { key: 0xdef });
        r.reservation = Some(Reservation {
            holder: RegistrantId::all_ports([2; 16]),
            rtype: ReservationType::EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
        });
        r
    }

    /// Initiator port `[i; 16]` through relative target port `port`.
    fn through(i: u8, port: u16) -> RegistrantId {
        RegistrantId {
            initiator: [i; 16],
            port: Some(port),
        }
    }

    #[test]
    fn round_trip() {
        let r = sample();
        let t = encode(&NAA, &r);
        assert!(t.starts_with("srptd-pr 2\nlun 60010203"));
        assert!(t.contains(&format!("registration {} 3 0000000000000abd\n", hex(&[1; 16]))));
        assert!(t.contains(&format!("reservation {} all 6\n", hex(&[2; 16]))));
        assert_eq!(decode(&NAA, &t), Ok(r));
        assert_eq!(
            decode(&NAA, &encode(&NAA, &Reservations::default())).map(|r| r.registrations.len()),
            Ok(0)
        );
    }

    /// An all registrants reservation outlives the registration of whoever
    /// reserved (every registrant holds it): it is saved and loaded so
    /// (found by the `pr` fuzz target).
    #[test]
    fn all_registrants_reservation_of_an_unregistered_reserver_round_trips() {
        let mut r = sample();
        r.reservation = Some(Reservation {
            holder: through(9, 1),
            rtype: ReservationType::EXCLUSIVE_ACCESS_ALL_REGISTRANTS,
        });
        assert_eq!(decode(&NAA, &encode(&NAA, &r)), Ok(r.clone()));
        r.registrations.clear();
        assert_eq!(
            decode(&NAA, &encode(&NAA, &r)).map(|_| ()),
            Err((4, "an all registrants reservation without registrants"))
        );
    }

    #[test]
    fn corruption_is_detected() {
        let t = encode(&NAA, &sample());
        // Every single-byte change and every truncation is refused.
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] ^= 0x01;
            if let Ok(s) = std::str::from_utf8(&b) {
                assert!(decode(&NAA, s).is_err(), "flip at {i}");
            }
            assert!(decode(&NAA, &t[..i]).is_err(), "cut at {i}");
        }
        let mut other = NAA;
        other[15] ^= 1;
        assert_eq!(
            decode(&other, &t).unwrap_err().1,
            "the file belongs to another LUN"
        );
    }

    #[test]
    fn invariants_are_checked() {
        // A well-formed checksum over a body that breaks an invariant.
        let with_sum = |body: &str| {
            let mut s = body.to_string();
            let sum = fnv1a(SEED, s.as_bytes());
            s.push_str(&format!("checksum {sum:016x}\n"));
            s
        };
        let head = format!("{MAGIC}\nlun {}\ngeneration 1\n", hex(&NAA));
        let reg = format!("registration {} 1 {:016x}\n", hex(&[1; 16]), 5);
        let reg_all = format!("registration {} all {:016x}\n", hex(&[1; 16]), 6);
        for (body, why) in [
            (
                format!("{head}reservation {} 1 1\n", hex(&[1; 16])),
                "the reservation holder is not registered",
            ),
            (
                format!("{head}{reg}reservation {} 2 1\n", hex(&[1; 16])),
                "the reservation holder is not registered",
            ),
            (format!("{head}{reg}{reg}"), "duplicate registration"),
            (format!("{head}{reg}{reg_all}"), "duplicate registration"),
            (
                format!("{head}registration {} 1 {:016x}\n", hex(&[1; 16]), 0),
                "malformed reservation key",
            ),
            (
                format!("{head}registration {} 0 {:016x}\n", hex(&[1; 16]), 5),
                "malformed target port",
            ),
            (
                format!("{head}registration {} 65536 {:016x}\n", hex(&[1; 16]), 5),
                "malformed target port",
            ),
            (
                format!("{head}{reg}reservation {} 1 2\n", hex(&[1; 16])),
                "malformed reservation type",
            ),
            (format!("{head}bogus\n"), "unexpected line"),
        ] {
            assert_eq!(decode(&NAA, &with_sum(&body)).unwrap_err().1, why);
        }
    }

    /// A version 1 file (registrations per initiator port) loads with its
    /// registrations and reservation through every target port.
    #[test]
    fn version_1_files_load_as_all_target_ports() {
        let with_sum = |body: &str| {
            let sum = fnv1a(SEED, body.as_bytes());
            format!("{body}checksum {sum:016x}\n")
        };
        let mut body = format!("srptd-pr 1\nlun {}\ngeneration 4\n", hex(&NAA));
        body.push_str(&format!("registration {} {:016x} 0\n", hex(&[1; 16]), 5));
        body.push_str(&format!("registration {} {:016x} 1\n", hex(&[2; 16]), 6));
        body.push_str(&format!("reservation {} 1\n", hex(&[1; 16])));
        let r = decode(&NAA, &with_sum(&body)).unwrap();
        assert_eq!(r.generation, 4);
        assert_eq!(r.registrations[&RegistrantId::all_ports([1; 16])].key, 5);
        assert_eq!(r.registrations[&RegistrantId::all_ports([2; 16])].key, 6);
        assert_eq!(r.reservation.unwrap().holder, RegistrantId::all_ports([1; 16]));
        // Each version's lines only under its own header.
        let v2_header = body.replace("srptd-pr 1", "srptd-pr 2");
        assert_eq!(
            decode(&NAA, &with_sum(&v2_header)).unwrap_err().1,
            "malformed target port"
        );
        let bad_atp = body.replace(" 1\nreservation", " 2\nreservation");
        assert_eq!(
            decode(&NAA, &with_sum(&bad_atp)).unwrap_err().1,
            "malformed ALL_TG_PT"
        );
    }

    #[test]
    fn save_load_remove() {
        let dir = std::env::temp_dir().join(format!("srptd-aptpl-{}", std::process::id()));
        let f = AptplFile::new(&dir.join("sub"), NAA);
        assert!(f.load().unwrap().is_none());
        f.save(&sample()).unwrap();
        assert_eq!(f.load().unwrap(), Some(sample()));
        assert!(!f.tmp_path().exists());
        f.remove().unwrap();
        f.remove().unwrap();
        assert!(f.load().unwrap().is_none());
        // A file where the directory should be: saving fails.
        std::fs::write(dir.join("file"), b"x").unwrap();
        assert!(AptplFile::new(&dir.join("file"), NAA).save(&sample()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
