//! COMPARE AND WRITE (SBC-3 5.2) through whole SRP channels: several I_T
//! nexuses on threads of their own, racing CAW against plain WRITEs and
//! against each other, on a RAM LUN (whose WRITEs would be zero copy) and
//! a file LUN.

mod common;

use std::sync::{Arc, Barrier};

use common::*;
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{LunConfig, Target, TargetConfig};

const GOOD: u8 = 0x00;
const CHECK_CONDITION: u8 = 0x02;
const BS: usize = 4096;
/// The contested region: LBA 8, 128 blocks (512 KiB, so copies take long
/// enough to overlap; the CAW moves twice that, the 1 MiB MAXIMUM
/// TRANSFER LENGTH).
const LBA: u64 = 8;
const BLOCKS: usize = 128;
const LEN: usize = BLOCKS * BS;

/// A target with a RAM LUN 0 and a file LUN 1 (its file named by `test`).
fn target(test: &str) -> (Arc<Target>, TempPath) {
    let name = format!("srptd-caw-{}-{test}", std::process::id());
    let path = TempPath(std::env::temp_dir().join(name));
    std::fs::File::create(&path.0).unwrap().set_len(2 << 20).unwrap();
    let luns = vec![
        LunConfig::new(0, BackstoreConfig::parse("ram:2M,bs=4096", "lun").unwrap()),
        LunConfig::new(
            1,
            BackstoreConfig::parse(&format!("file:{},bs=4096", path.0.display()), "lun").unwrap(),
        ),
    ];
    let t = Target::new(TargetConfig {
        luns,
        ..TargetConfig::default()
    })
    .unwrap();
    (t, path)
}

struct TempPath(std::path::PathBuf);
impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Logs `ini` in and consumes the power-on unit attention of each LUN.
fn login(t: &Arc<Target>, ini: [u8; 16]) -> Sim {
    let mut s = login_quiet(t, ini);
    for lun in 0..2 {
        let (r, _) = s.command(lun, &[0; 6], None, 0, Layout::Direct);
        assert_eq!(r.status, GOOD);
    }
    s
}

/// Logs `ini` in; afterwards no unit attention is pending on either LUN
/// (this channel or another of the nexus took it).
fn login_quiet(t: &Arc<Target>, ini: [u8; 16]) -> Sim {
    let mut s = Sim::login_as(t, ini, 16);
    for lun in 0..2 {
        s.command(lun, &[0; 6], None, 0, Layout::Direct);
    }
    s
}

fn caw_cdb(lba: u64, nlb: u8) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = nlb;
    c
}

/// Version `k` of writer `tag`: each block starts with (tag, k) and is
/// filled with a byte of (tag, k, block), so any mix of two versions is
/// visible.
fn version(tag: u8, k: u32) -> Vec<u8> {
    let mut d = vec![0u8; LEN];
    for (b, blk) in d.chunks_mut(BS).enumerate() {
        blk.fill(tag ^ (k as u8) ^ (b as u8));
        blk[0] = tag;
        blk[1..5].copy_from_slice(&k.to_be_bytes());
    }
    d
}

/// The (tag, k) of a region that holds one whole version.
fn whole(d: &[u8]) -> Option<(u8, u32)> {
    let (tag, k) = (d[0], u32::from_be_bytes(d[1..5].try_into().unwrap()));
    (d == version(tag, k)).then_some((tag, k))
}

const WRITER: u8 = 0x57;
const CAWER: u8 = 0xca;

/// Rounds of: one nexus COMPARE AND WRITEs over what it read while
/// another WRITEs a whole version at the same moment (a barrier starts
/// both); then, with nothing in flight, the region must hold one whole
/// version: the CAW's write data or the WRITE's, never a mix.
fn caw_against_writes(lun: u16) {
    const ROUNDS: u32 = 500;
    let (t, _file) = target(&format!("writes{lun}"));
    let mut a = login(&t, [0xa1; 16]);
    // The first CAW turns the RAM LUN's zero-copy WRITEs off; the race
    // starts after it.
    let zeros = vec![0u8; LEN];
    let init = [&zeros[..], &version(CAWER, 0)[..]].concat();
    let (r, _) = a.command(lun, &caw_cdb(LBA, BLOCKS as u8), Some(&init), 0, Layout::Direct);
    assert_eq!(r.status, GOOD, "{:?}", r.sense_key_asc());
    let barrier = Arc::new(Barrier::new(2));
    let writer = {
        let (t, barrier) = (Arc::clone(&t), Arc::clone(&barrier));
        std::thread::spawn(move || {
            let mut b = login(&t, [0xb2; 16]);
            for k in 1..=ROUNDS {
                let d = version(WRITER, k);
                barrier.wait();
                let r = b.write(lun, LBA, &d, BS as u32, Layout::Direct);
                assert_eq!(r.status, GOOD);
                barrier.wait();
            }
        })
    };
    let (mut good, mut miscompares) = (0u32, 0u32);
    for k in 1..=ROUNDS {
        let (r, d) = a.read(lun, LBA, LEN as u32, BS as u32, Layout::Direct);
        assert_eq!(r.status, GOOD);
        let seen = whole(&d).expect("whole before the round");
        let data = [version(seen.0, seen.1), version(CAWER, k)].concat();
        barrier.wait();
        let (r, _) = a.command(lun, &caw_cdb(LBA, BLOCKS as u8), Some(&data), 0, Layout::Direct);
        barrier.wait();
        let (_, d) = a.read(lun, LBA, LEN as u32, BS as u32, Layout::Direct);
        let after = whole(&d);
        match r.status {
            GOOD => {
                good += 1;
                assert!(
                    after == Some((CAWER, k)) || after == Some((WRITER, k)),
                    "LUN {lun}: round {k}, CAW over {seen:?} succeeded, region holds {after:?}"
                );
            }
            CHECK_CONDITION => {
                assert_eq!(r.sense_key_asc(), Some((0x0e, 0x1d, 0x00)));
                miscompares += 1;
                assert_eq!(after, Some((WRITER, k)), "LUN {lun}: round {k}, CAW miscompared");
            }
            s => panic!("status {s:#x}"),
        }
    }
    writer.join().unwrap();
    eprintln!("LUN {lun}: {good} CAWs, {miscompares} miscompares");
}

#[test]
fn caw_against_writes_ram() {
    caw_against_writes(0);
}

#[test]
fn caw_against_writes_file() {
    caw_against_writes(1);
}

/// Three nexuses (one with two channels) count with COMPARE AND WRITE:
/// read the counter, CAW it to one more. Each CAW that succeeds must have
/// counted exactly once, so the count ends at the successes.
fn counting(lun: u16) {
    let (t, _file) = target(&format!("counting{lun}"));
    const PER_THREAD: u32 = 100;
    let inis = [[0xa1; 16], [0xb2; 16], [0xc3; 16], [0xc3; 16]];
    let threads: Vec<_> = inis
        .into_iter()
        .map(|ini| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || {
                let mut s = login_quiet(&t, ini);
                let (mut won, mut lost) = (0u32, 0u32);
                while won < PER_THREAD {
                    let (r, d) = s.read(lun, LBA, BS as u32, BS as u32, Layout::Direct);
                    assert_eq!(r.status, GOOD);
                    let n = u64::from_be_bytes(d[..8].try_into().unwrap());
                    let mut next = d.clone();
                    next[..8].copy_from_slice(&(n + 1).to_be_bytes());
                    let data = [d, next].concat();
                    let (r, _) = s.command(lun, &caw_cdb(LBA, 1), Some(&data), 0, Layout::Direct);
                    match r.status {
                        GOOD => won += 1,
                        CHECK_CONDITION => {
                            assert_eq!(r.sense_key_asc(), Some((0x0e, 0x1d, 0x00)));
                            lost += 1;
                        }
                        st => panic!("status {st:#x}"),
                    }
                }
                lost
            })
        })
        .collect();
    let lost: u32 = threads.into_iter().map(|h| h.join().unwrap()).sum();
    let mut s = login(&t, [0xd4; 16]);
    let (_, d) = s.read(lun, LBA, BS as u32, BS as u32, Layout::Direct);
    let n = u64::from_be_bytes(d[..8].try_into().unwrap());
    assert_eq!(n, 4 * u64::from(PER_THREAD), "LUN {lun} ({lost} miscompares)");
}

#[test]
fn counting_ram() {
    counting(0);
}

#[test]
fn counting_file() {
    counting(1);
}
